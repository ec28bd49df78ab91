/**
 * The healthz endpoint flannel has (--healthz-ip/--healthz-port), plus
 * /metrics in Prometheus text format for the dataplane counters.
 */
import { createServer, type Server } from 'node:http';
import type { Metrics } from './registry.js';

export async function startHealthz(ip: string, port: number, metrics: Metrics): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405).end();
    } else if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('flanneld is running\n');
    } else if (path === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(metrics.render());
    } else {
      res.writeHead(404).end();
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, ip, () => resolve());
  });
  return server;
}
