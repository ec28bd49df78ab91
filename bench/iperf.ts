/**
 * iperf3 runs between two namespaces and parsing of its -J output.
 * The receiver's numbers are what we report: for UDP the sender happily
 * counts datagrams the path dropped.
 */
import type { ChildProcess } from 'node:child_process';
import type { TestHost } from '../test/helpers/netns.js';
import { isListening, waitFor } from '../test/helpers/netns.js';

export interface IperfTcpResult {
  protocol: 'TCP';
  streams: number;
  seconds: number;
  /** Bytes received by the server. */
  bytes: number;
  bitsPerSecond: number;
  retransmits: number | null;
}

export interface IperfUdpResult {
  protocol: 'UDP';
  datagramBytes: number;
  seconds: number;
  /** Bytes the server received. */
  bytes: number;
  /** Received rate. */
  bitsPerSecond: number;
  sentBitsPerSecond: number;
  lostPercent: number;
  lostPackets: number;
  packets: number;
  jitterMs: number | null;
}

export type IperfResult = IperfTcpResult | IperfUdpResult;

type Json = Record<string, any>;

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** Parses `iperf3 -c ... -J` output; throws with iperf3's own message on a failed run. */
export function parseIperfJson(text: string): IperfResult {
  let doc: Json;
  try {
    doc = JSON.parse(text) as Json;
  } catch {
    throw new Error(`iperf3 output is not JSON: ${text.trim().slice(0, 200) || '(empty)'}`);
  }
  if (typeof doc.error === 'string') throw new Error(`iperf3: ${doc.error}`);
  const start = (doc.start ?? {}) as Json;
  const end = (doc.end ?? {}) as Json;
  const test = (start.test_start ?? {}) as Json;
  const protocol = test.protocol;
  if (protocol === 'TCP') {
    const rcv = end.sum_received as Json | undefined;
    const snt = end.sum_sent as Json | undefined;
    if (!rcv || num(rcv.bytes) == null) throw new Error('iperf3 JSON has no end.sum_received');
    return {
      protocol: 'TCP',
      streams: num(test.num_streams) ?? 1,
      seconds: num(rcv.seconds) ?? 0,
      bytes: rcv.bytes,
      bitsPerSecond: num(rcv.bits_per_second) ?? 0,
      retransmits: snt ? num(snt.retransmits) : null,
    };
  }
  if (protocol === 'UDP') {
    // iperf3 >= 3.11 reports the receiver side in sum_received; older ones
    // only have `sum` (sender bytes plus the server's loss count).
    const sum = (end.sum ?? {}) as Json;
    const rcv = end.sum_received as Json | undefined;
    const snt = (end.sum_sent ?? sum) as Json;
    const lostPercent = num(rcv?.lost_percent) ?? num(sum.lost_percent);
    const seconds = num(rcv?.seconds) ?? num(sum.seconds);
    if (lostPercent == null || seconds == null) throw new Error('iperf3 JSON has no UDP summary');
    const sentBytes = num(snt.bytes) ?? 0;
    const bytes = num(rcv?.bytes) ?? Math.round(sentBytes * (1 - lostPercent / 100));
    return {
      protocol: 'UDP',
      datagramBytes: num(test.blksize) ?? 0,
      seconds,
      bytes,
      bitsPerSecond: num(rcv?.bits_per_second) ?? (seconds > 0 ? (bytes * 8) / seconds : 0),
      sentBitsPerSecond: num(snt.bits_per_second) ?? 0,
      lostPercent,
      lostPackets: num(rcv?.lost_packets) ?? num(sum.lost_packets) ?? 0,
      packets: num(sum.packets) ?? num(snt.packets) ?? 0,
      jitterMs: num(rcv?.jitter_ms) ?? num(sum.jitter_ms),
    };
  }
  throw new Error(`iperf3 JSON: unknown protocol ${JSON.stringify(protocol)}`);
}

export const IPERF_PORT = 5201;

/** Starts `iperf3 -s` in `host`, listening on all addresses, and waits until it accepts. */
export async function startIperfServer(host: TestHost): Promise<ChildProcess> {
  const srv = host.spawn(['iperf3', '-s', '-p', String(IPERF_PORT)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  srv.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  srv.stderr!.setEncoding('utf8').on('data', (d: string) => (out += d));
  // Readiness from the socket table: iperf3's stdout is block-buffered on a pipe.
  const state = await waitFor(async () => (srv.exitCode !== null ? 'exited' : (await isListening(host, IPERF_PORT)) ? 'ready' : null), 5000, 'iperf3 server');
  if (state === 'exited') throw new Error(`iperf3 server exited: ${out.trim()}`);
  return srv;
}

export interface IperfClientOptions {
  seconds: number;
  streams?: number;
  /** UDP datagram payload size; omit for TCP. */
  udpLength?: number;
}

export async function runIperfClient(host: TestHost, targetIp: string, o: IperfClientOptions): Promise<IperfResult> {
  const args = ['iperf3', '-c', targetIp, '-p', String(IPERF_PORT), '-t', String(o.seconds), '-J', '--connect-timeout', '3000'];
  if (o.streams && o.streams > 1) args.push('-P', String(o.streams));
  // -b 0: no rate limit, so the path (not iperf3's pacing) sets the ceiling.
  if (o.udpLength) args.push('-u', '-b', '0', '-l', String(o.udpLength));
  const r = await host.exec(args, { timeoutMs: (o.seconds + 20) * 1000 });
  if (r.code === -1) throw new Error(`iperf3 client timed out`);
  return parseIperfJson(r.stdout);
}
