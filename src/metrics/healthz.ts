/**
 * The healthz endpoint flannel has (--healthz-ip/--healthz-port), plus
 * /metrics in Prometheus text format for the dataplane counters.
 *
 * Like flannel's it listens on 0.0.0.0 by default, so it may be reachable
 * from anywhere: an unhealthy answer names the failing components only
 * (details in the log), requests must arrive whole within a few seconds,
 * idle connections are closed, and the connections held at once are capped.
 */
import { createServer, type Server } from 'node:http';
import type { Metrics } from './registry.js';
import type { Health } from './health.js';
import type { Readiness } from './readiness.js';

/** A request's headers must arrive within this; the whole request within REQUEST_TIMEOUT_MS. */
export const HEADERS_TIMEOUT_MS = 5000;
export const REQUEST_TIMEOUT_MS = 10_000;
const KEEPALIVE_TIMEOUT_MS = 5000;
/** Connections held at once; more are refused (a probe and a scraper need a few). */
export const MAX_CONNECTIONS = 64;

export async function startHealthz(ip: string, port: number, metrics: Metrics, health: Health, readiness?: Readiness): Promise<Server> {
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405).end();
    } else if (path === '/healthz') {
      const failing = health.summary();
      if (failing === null) res.writeHead(200, { 'content-type': 'text/plain' }).end('flanneld is running\n');
      else res.writeHead(503, { 'content-type': 'text/plain' }).end(`flanneld is unhealthy: ${failing} (see the log)\n`);
    } else if (path === '/readyz') {
      // Ready: started (subnet.env written, backend running) and nothing failing.
      const waiting = readiness?.waitingFor ?? null;
      const failing = health.summary();
      if (waiting === null && failing === null) res.writeHead(200, { 'content-type': 'text/plain' }).end('flanneld is ready\n');
      else res.writeHead(503, { 'content-type': 'text/plain' }).end(`flanneld is not ready: ${waiting ?? `unhealthy: ${failing}`} (see the log)\n`);
    } else if (path === '/metrics') {
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' }).end(metrics.render());
    } else {
      res.writeHead(404).end();
    }
  });
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.keepAliveTimeout = KEEPALIVE_TIMEOUT_MS;
  server.maxConnections = MAX_CONNECTIONS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, ip, () => resolve());
  });
  return server;
}
