/**
 * The measurement suite run on every path. A failing measurement is recorded
 * with its error and the suite goes on, so one bad test does not lose a row.
 */
import { cpuPerGB, cpuSeconds } from './cpu.js';
import { runIperfClient, startIperfServer, type IperfTcpResult, type IperfUdpResult } from './iperf.js';
import { measureLatency, type LatencyResult } from './latency.js';
import type { PathSetup, Progress } from './paths.js';

export interface SuiteOptions {
  seconds: number;
  pingCount: number;
  pingIntervalMs: number;
}

export interface CpuSample {
  cpuSeconds: number;
  bytes: number;
  secondsPerGB: number | null;
}

export interface SuiteResult {
  tcp1?: IperfTcpResult;
  tcp4?: IperfTcpResult;
  udp1400?: IperfUdpResult;
  udp64?: IperfUdpResult;
  latency?: LatencyResult;
  /** Daemon CPU per test, for paths with daemons. */
  cpu?: Partial<Record<'tcp1' | 'tcp4' | 'udp1400' | 'udp64', CpuSample>>;
  errors: Record<string, string>;
}

/** Quiet time between the last flood and the latency probes. */
export const LATENCY_SETTLE_MS = 1000;

const fmtRate = (bps: number) => (bps >= 1e9 ? `${(bps / 1e9).toFixed(2)} Gbit/s` : `${(bps / 1e6).toFixed(1)} Mbit/s`);

export async function runSuite(name: string, p: PathSetup, o: SuiteOptions, progress: Progress): Promise<SuiteResult> {
  const res: SuiteResult = { errors: {} };
  const server = await startIperfServer(p.server);
  try {
    const iperfTests = [
      { key: 'tcp1', what: 'TCP 1 stream', opts: { seconds: o.seconds } },
      { key: 'tcp4', what: 'TCP 4 streams', opts: { seconds: o.seconds, streams: 4 } },
      { key: 'udp1400', what: 'UDP 1400 B', opts: { seconds: o.seconds, udpLength: 1400 } },
      { key: 'udp64', what: 'UDP 64 B', opts: { seconds: o.seconds, udpLength: 64 } },
    ] as const;
    for (const t of iperfTests) {
      progress(`${name}: ${t.what} for ${o.seconds}s -> ${p.targetIp}`);
      const before = p.daemonPids.length ? cpuSeconds(p.daemonPids) : 0;
      try {
        const r = await runIperfClient(p.client, p.targetIp, t.opts);
        (res as unknown as Record<string, unknown>)[t.key] = r;
        let line = `${name}: ${t.what}: ${fmtRate(r.bitsPerSecond)}`;
        if (r.protocol === 'UDP') line += ` received, loss ${r.lostPercent.toFixed(1)}%`;
        if (p.daemonPids.length) {
          const used = cpuSeconds(p.daemonPids) - before;
          const sample = { cpuSeconds: used, bytes: r.bytes, secondsPerGB: cpuPerGB(used, r.bytes) };
          (res.cpu ??= {})[t.key] = sample;
          line += `, daemons ${used.toFixed(2)} CPU s (${sample.secondsPerGB?.toFixed(2) ?? '-'} s/GB)`;
        }
        progress(line);
      } catch (e) {
        res.errors[t.key] = (e as Error).message;
        progress(`${name}: ${t.what}: failed: ${(e as Error).message}`);
      }
    }
  } finally {
    server.kill('SIGKILL');
  }
  // Latency comes after the floods: let the queues they filled drain first, and take 100 probes, so one
  // slow wake-up on a 2-core box moves the median less (20 probes right after the 64-byte flood gave
  // udp p50s of 0.53 to 1.1 ms between runs).
  await new Promise((r) => setTimeout(r, LATENCY_SETTLE_MS));
  progress(`${name}: latency, ${o.pingCount} probes ${o.pingIntervalMs} ms apart, after ${LATENCY_SETTLE_MS} ms of quiet`);
  try {
    res.latency = await measureLatency(p.client, p.server, p.targetIp, o.pingCount, o.pingIntervalMs);
    progress(`${name}: latency avg ${res.latency.avgMs.toFixed(3)} ms p50 ${res.latency.p50Ms.toFixed(3)} ms (${res.latency.method}, ${res.latency.received}/${res.latency.sent})`);
  } catch (e) {
    res.errors.latency = (e as Error).message;
    progress(`${name}: latency failed: ${(e as Error).message}`);
  }
  return res;
}
