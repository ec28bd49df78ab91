/**
 * `node dist/bench/profile.js [--seconds N] [--cpu-prof] [--backend udp|wireguard] [--env K=V ...]`:
 * where the userspace dataplane (udp, or wireguard's userspace path) spends
 * its time during one single-stream TCP iperf3 run (the bench's udp or ftwg
 * path). Reports, over a steady-state window:
 *   - user/system CPU per thread of both daemons (/proc/<pid>/task/<tid>),
 *     so the packet workers' kernel time is separated from their JS time;
 *   - packets per batch and per syscall, from the /metrics counters;
 *   - with --cpu-prof, the hottest JS functions of each thread (node writes
 *     one .cpuprofile per thread, workers included, when the daemon exits).
 * Findings are summarised by hand in bench/PROFILE.md.
 */
import { mkdtempSync, readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ticksPerSecond } from './cpu.js';
import { startIperfServer, runIperfClient } from './iperf.js';
import { setupFlannel } from './paths.js';
import type { TestHost } from '../test/helpers/netns.js';
import { summariseProfile } from './cpuprofile.js';

const HEALTHZ_PORT = 9102;

interface ThreadSample {
  name: string;
  utime: number;
  stime: number;
}

function threads(pid: number): Map<number, ThreadSample> {
  const out = new Map<number, ThreadSample>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      const name = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim();
      out.set(Number(tid), { name, utime: Number(rest[11]), stime: Number(rest[12]) });
    } catch {
      // Thread exited between readdir and read.
    }
  }
  return out;
}

async function metrics(h: TestHost): Promise<Record<string, number>> {
  const r = await h.exec(['curl', '-s', `http://127.0.0.1:${HEALTHZ_PORT}/metrics`]);
  const out: Record<string, number> = {};
  for (const line of r.stdout.split('\n')) {
    const m = /^(flannel_(?:udp|wireguard)_\w+(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (m) out[m[1]!] = Number(m[2]);
  }
  return out;
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  let seconds = 12;
  let cpuProf = false;
  const env: Record<string, string> = {};
  let backend: 'udp' | 'wireguard' = 'udp';
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--seconds') seconds = Number(argv[++i]);
    else if (argv[i] === '--backend') backend = argv[++i] === 'wireguard' ? 'wireguard' : 'udp';
    else if (argv[i] === '--cpu-prof') cpuProf = true;
    else if (argv[i] === '--env') {
      const [k, v] = argv[++i]!.split('=');
      env[k!] = v ?? '';
    }
  }
  const profDir = mkdtempSync(join(tmpdir(), 'ftprof-'));
  const p = await setupFlannel((m) => process.stderr.write(m + '\n'), {
    nodeArgs: cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [],
    daemonArgs: ['--healthz-port', String(HEALTHZ_PORT), '--healthz-ip', '127.0.0.1'],
    env,
    backend,
  });
  const prefix = `flannel_${backend}`;
  const hz = ticksPerSecond();
  try {
    const srv = await startIperfServer(p.server);
    const run = runIperfClient(p.client, p.targetIp, { seconds });
    // Skip slow start; sample a window in the middle of the run.
    await new Promise((r) => setTimeout(r, 2000));
    const t0 = p.daemonPids.map(threads);
    const m0 = await Promise.all([metrics(p.client), metrics(p.server)]);
    const w0 = Date.now();
    await new Promise((r) => setTimeout(r, (seconds - 4) * 1000));
    const t1 = p.daemonPids.map(threads);
    const m1 = await Promise.all([metrics(p.client), metrics(p.server)]);
    const wall = (Date.now() - w0) / 1000;
    const res = await run;
    srv.kill('SIGKILL');
    console.log(`iperf3 TCP 1 stream: ${(res.bitsPerSecond / 1e9).toFixed(2)} Gbit/s, retransmits ${res.protocol === "TCP" ? res.retransmits : "-"}; window ${wall.toFixed(1)} s`);
    p.daemonPids.forEach((pid, i) => {
      const role = i === 0 ? 'client-side daemon (tx: TUN->UDP)' : 'server-side daemon (rx: UDP->TUN)';
      console.log(`\n${role} pid ${pid}: thread  user%  sys%   (of one core over the window)`);
      let u = 0;
      let s = 0;
      for (const [tid, b] of t1[i]!) {
        const a = t0[i]!.get(tid);
        if (!a) continue;
        const du = (b.utime - a.utime) / hz / wall;
        const ds = (b.stime - a.stime) / hz / wall;
        u += du;
        s += ds;
        if (du + ds >= 0.005) console.log(`  ${String(tid).padEnd(8)} ${b.name.padEnd(16)} ${(du * 100).toFixed(1).padStart(5)}  ${(ds * 100).toFixed(1).padStart(5)}`);
      }
      console.log(`  total                     ${(u * 100).toFixed(1).padStart(5)}  ${(s * 100).toFixed(1).padStart(5)}`);
      const d = (k: string) => (m1[i]![k] ?? 0) - (m0[i]![k] ?? 0);
      const tunRead = d(`${prefix}_tun_read_packets_total`);
      const sent = d(`${prefix}_sent_packets_total`);
      const txB = d(`${prefix}_tx_batches_total`);
      const recv = d(`${prefix}_received_packets_total`);
      const deliv = d(`${prefix}_delivered_packets_total`);
      const rxB = d(`${prefix}_rx_batches_total`);
      const extra = Object.keys(m1[i]!)
        .filter((k) => /offload|segment|gso|gro|coalesc|super|sealed|opened/.test(k))
        .map((k) => `${k}=${d(k)}`)
        .join(' ');
      console.log(
        `  tx: ${(tunRead / wall / 1000).toFixed(1)} k TUN reads/s, ${(sent / wall / 1000).toFixed(1)} k datagrams/s, ${txB} batches, ${(tunRead / Math.max(txB, 1)).toFixed(2)} pkts/batch`,
      );
      console.log(
        `  rx: ${(recv / wall / 1000).toFixed(1)} k datagrams/s, ${(deliv / wall / 1000).toFixed(1)} k TUN writes/s, ${rxB} batches, ${(recv / Math.max(rxB, 1)).toFixed(2)} dgrams/batch`,
      );
      if (extra) console.log(`  ${extra}`);
      const busy = u + s;
      const pkts = Math.max(sent, deliv);
      if (pkts > 0) console.log(`  CPU per datagram: ${((busy * wall * 1e6) / pkts).toFixed(2)} us (user ${((u * wall * 1e6) / pkts).toFixed(2)}, sys ${((s * wall * 1e6) / pkts).toFixed(2)})`);
    });
  } finally {
    await p.teardown();
  }
  if (cpuProf) {
    for (const f of readdirSync(profDir).filter((f) => f.endsWith('.cpuprofile'))) {
      console.log(`\n${f}:`);
      for (const l of summariseProfile(join(profDir, f))) console.log('  ' + l);
    }
    console.log(`(profiles in ${profDir})`);
  }
}

main().catch((e: unknown) => {
  console.error((e as Error).stack ?? e);
  process.exitCode = 1;
});
