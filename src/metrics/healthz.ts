/**
 * The healthz endpoint flannel has (--healthz-ip/--healthz-port), plus
 * /metrics in Prometheus text format for the dataplane counters.
 */
import { createServer, type Server } from 'node:http';
import type { Metrics } from './registry.js';
import type { Health } from './health.js';

export async function startHealthz(ip: string, port: number, metrics: Metrics, health: Health): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405).end();
    } else if (path === '/healthz') {
      const problem = health.problem();
      if (problem === null) res.writeHead(200, { 'content-type': 'text/plain' }).end('flanneld is running\n');
      else res.writeHead(503, { 'content-type': 'text/plain' }).end(`flanneld is unhealthy\n${problem}\n`);
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
