/** iperf3 between two test hosts' addresses: a one-shot server and a JSON client run. */
import assert from 'node:assert/strict';
import { isListening, waitFor, type TestHost } from './netns.js';

/** Start `iperf3 -s -1` bound to `ip` on `host` and wait until it listens; returns its stopper. */
export async function startIperfServer(host: TestHost, ip: string): Promise<() => void> {
  const srv = host.spawn(['iperf3', '-s', '-1', '-B', ip], { stdio: 'ignore' });
  await waitFor(() => isListening(host, 5201), 5000, 'iperf3 server');
  return () => srv.kill();
}

/** One TCP run from `from` (on `host`) to `to`; asserts it completed and returns bits per second received. */
export async function iperfClient(host: TestHost, from: string, to: string, seconds: number): Promise<number> {
  const r = await host.exec(['iperf3', '-c', to, '-B', from, '-t', String(seconds), '-J'], { timeoutMs: seconds * 1000 + 60_000 });
  assert.equal(r.code, 0, `iperf3: ${r.stderr || r.stdout.slice(-500)}`);
  return (JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
}

/** Server on (server, serverIp), client on (client, clientIp) for `seconds`: bits per second. */
export async function iperfRate(client: TestHost, clientIp: string, server: TestHost, serverIp: string, seconds: number): Promise<number> {
  const stop = await startIperfServer(server, serverIp);
  try {
    return await iperfClient(client, clientIp, serverIp, seconds);
  } finally {
    stop();
  }
}
