/**
 * Round-trip latency between two namespaces: `ping` when the machine has it,
 * otherwise a UDP echo written in Node (some minimal images ship no ping, and
 * the number is still comparable across paths measured the same way).
 */
import { existsSync } from 'node:fs';
import type { TestHost } from '../test/helpers/netns.js';
import { isListening, waitFor } from '../test/helpers/netns.js';
import { percentile } from './stats.js';

export interface LatencyResult {
  method: 'ping' | 'udp-echo';
  sent: number;
  received: number;
  minMs: number;
  avgMs: number;
  p50Ms: number;
  maxMs: number;
}

/** Parses iputils ping output: per-reply `time=X ms` lines and the summary. */
export function parsePing(out: string): LatencyResult {
  const times = [...out.matchAll(/time[=<]([\d.]+) ?ms/g)].map((m) => Number(m[1]));
  const stats = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(out);
  const rtt = /= ([\d.]+)\/([\d.]+)\/([\d.]+)\/([\d.]+) ms/.exec(out);
  if (!stats) throw new Error(`unrecognised ping output: ${out.trim().slice(0, 200)}`);
  const received = Number(stats[2]);
  if (received === 0 || times.length === 0) throw new Error(`no ping replies (${stats[1]} sent)`);
  const sorted = [...times].sort((a, b) => a - b);
  return {
    method: 'ping',
    sent: Number(stats[1]),
    received,
    minMs: rtt ? Number(rtt[1]) : sorted[0]!,
    avgMs: rtt ? Number(rtt[2]) : times.reduce((a, b) => a + b, 0) / times.length,
    p50Ms: percentile(sorted, 50),
    maxMs: rtt ? Number(rtt[3]) : sorted[sorted.length - 1]!,
  };
}

export function haveBinary(name: string): boolean {
  return (process.env.PATH ?? '/usr/bin:/bin').split(':').some((d) => d && existsSync(`${d}/${name}`));
}

// Echo server: answers every datagram with itself.
const ECHO_SERVER = `
const s = require('node:dgram').createSocket('udp4');
s.on('message', (m, r) => s.send(m, r.port, r.address));
s.bind(Number(process.argv[2]), process.argv[1]);
`;

// Client: sends `count` probes `interval` ms apart, one at a time, and prints
// the round-trip times (ms) of those answered within 1 s as JSON.
const RTT_CLIENT = `
const [ip, port, count, interval] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
const s = require('node:dgram').createSocket('udp4');
const rtts = []; let seq = 0, pending = null;
s.on('message', (m) => {
  if (pending && m.readUInt32BE(0) === pending.seq) {
    rtts.push(Number(process.hrtime.bigint() - pending.t) / 1e6); clearTimeout(pending.timer); pending = null;
    setTimeout(next, interval);
  }
});
function next() {
  if (seq >= count) { console.log(JSON.stringify({ sent: seq, rtts })); s.close(); return; }
  const b = Buffer.alloc(64); b.writeUInt32BE(++seq, 0);
  pending = { seq, t: process.hrtime.bigint(), timer: setTimeout(() => { pending = null; next(); }, 1000) };
  s.send(b, port, ip);
}
next();
`;

export function summariseRtts(sent: number, rtts: number[]): LatencyResult {
  if (rtts.length === 0) throw new Error(`no echo replies (${sent} sent)`);
  const sorted = [...rtts].sort((a, b) => a - b);
  return {
    method: 'udp-echo',
    sent,
    received: rtts.length,
    minMs: sorted[0]!,
    avgMs: rtts.reduce((a, b) => a + b, 0) / rtts.length,
    p50Ms: percentile(sorted, 50),
    maxMs: sorted[sorted.length - 1]!,
  };
}

async function udpEcho(from: TestHost, to: TestHost, targetIp: string, count: number, intervalMs: number): Promise<LatencyResult> {
  const port = 7007;
  // Bind the wildcard address: the target may live on any device in `to`.
  const server = to.spawn(['node', '-e', ECHO_SERVER, '0.0.0.0', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    await waitFor(() => isListening(to, port, 'udp'), 5000, 'udp echo server');
    const r = await from.exec(['node', '-e', RTT_CLIENT, targetIp, String(port), String(count), String(intervalMs)], {
      timeoutMs: count * (intervalMs + 1000) + 5000,
      check: true,
    });
    const { sent, rtts } = JSON.parse(r.stdout) as { sent: number; rtts: number[] };
    return summariseRtts(sent, rtts);
  } finally {
    server.kill('SIGKILL');
  }
}

/** `count` probes `intervalMs` apart from `from` to targetIp (an address inside `to`). */
export async function measureLatency(from: TestHost, to: TestHost, targetIp: string, count = 20, intervalMs = 50): Promise<LatencyResult> {
  if (!haveBinary('ping')) return udpEcho(from, to, targetIp, count, intervalMs);
  const r = await from.exec(['ping', '-n', '-c', String(count), '-i', String(intervalMs / 1000), '-W', '1', targetIp], {
    timeoutMs: count * (intervalMs + 1000) + 5000,
  });
  return parsePing(r.stdout);
}
