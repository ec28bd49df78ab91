/**
 * What lease events cost a daemon (node dist/bench/leases.js [--leases N]):
 * one flanneld with the udp backend on a real etcd, in a network namespace,
 * and N leases of other hosts
 *   - present at start: CPU from launch until it routes to all N, minus the
 *     CPU of the same start with none;
 *   - arriving while it runs: CPU while N leases are written and followed.
 * CPU is the daemon's user + system time, with the `ip` processes it ran.
 * Written by bench/lease-writer.ts as flanneld daemons would write them.
 * --dual-stack: the network and every lease carry IPv6 too (with vxlan,
 * each lease is then state on flannel.1 and flannel-v6.1).
 */
import { closeSync, mkdtempSync, openSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { createHosts, run, waitFor, type TestHost } from '../test/helpers/netns.js';
import { startEtcd } from '../test/helpers/etcd.js';
import { FLANNELCTL, FLANNELD } from '../test/helpers/daemon.js';
import { parseProcStat, ticksPerSecond } from './cpu.js';
import { DUAL_STACK_IPV6_NETWORK, leaseKeyName } from './lease-names.js';

const PREFIX = '/coreos.com/network';
const WRITER = new URL('./lease-writer.js', import.meta.url).pathname;
const HEALTHZ_PORT = 8472;

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}

/** User + system seconds of a process and its waited-for children (the `ip` runs). */
function cpuOf(pid: number): number {
  const st = parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  return (st.utime + st.stime + st.cutime + st.cstime) / ticksPerSecond();
}

/** CPU seconds per thread name (main thread = "node", workers by their names), user and system apart. */
function threads(pid: number): Map<string, { user: number; sys: number }> {
  const out = new Map<string, { user: number; sys: number }>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const f = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = f.slice(f.indexOf('(') + 1, f.lastIndexOf(')'));
      const st = parseProcStat(f);
      const t = out.get(name) ?? { user: 0, sys: 0 };
      t.user += st.utime / ticksPerSecond();
      t.sys += st.stime / ticksPerSecond();
      out.set(name, t);
    } catch {
      /* thread exited */
    }
  }
  return out;
}

function threadDelta(a: Map<string, { user: number; sys: number }>, b: Map<string, { user: number; sys: number }>): string {
  return [...b]
    .map(([name, t]) => [name, t.user - (a.get(name)?.user ?? 0), t.sys - (a.get(name)?.sys ?? 0)] as const)
    .filter(([, u, s]) => u + s >= 0.01)
    .map(([name, u, s]) => `${name} ${u.toFixed(2)}u+${s.toFixed(2)}s`)
    .join(', ');
}

async function leasesFollowed(host: TestHost): Promise<number> {
  const r = await host.exec([process.execPath, '-e', `fetch('http://127.0.0.1:${HEALTHZ_PORT}/metrics').then(r=>r.text()).then(t=>process.stdout.write(t),()=>{})`], { timeoutMs: 5000 });
  const m = /^flannel_subnet_leases (\d+)$/m.exec(r.stdout);
  return m ? Number(m[1]) : -1;
}

async function main(): Promise<void> {
  const n = arg('--leases', 10_000);
  // --backend vxlan: every lease also costs an FDB entry, a neighbour entry and a route, programmed by the applier.
  const bi = process.argv.indexOf('--backend');
  const backend = bi >= 0 ? process.argv[bi + 1]! : 'udp';
  const dualStack = process.argv.includes('--dual-stack');
  // --profile DIR: V8 CPU profiles of the daemons (one .cpuprofile per start) for chrome://inspect or speedscope.
  const pi = process.argv.indexOf('--profile');
  const profileArgs = pi >= 0 ? ['--cpu-prof', `--cpu-prof-dir=${process.argv[pi + 1]}`] : [];
  const set = await createHosts(1, { prefix: 'ftsbl', topology: 'bridge' });
  const dir = mkdtempSync(join(tmpdir(), 'ftsbl-'));
  const etcdNs = set.switchNs!;
  await run('ip', ['-n', etcdNs, 'addr', 'add', '192.0.2.254/24', 'dev', 'br0'], { check: true });
  const etcd = await startEtcd({ netns: etcdNs, host: '192.0.2.254' });
  const inEtcdNs = (args: string[]) => run('ip', ['netns', 'exec', etcdNs, ...args], { check: true, timeoutMs: 600_000 });
  const host = set.hosts[0]!;
  // Dual stack: our own IPv6 address (PublicIPv6) and the IPv6 network; our lease takes a subnet above the others'.
  if (dualStack) await run('ip', ['-n', host.ns, '-6', 'addr', 'add', '2001:db8:ff::1/64', 'dev', host.iface, 'nodad'], { check: true });
  const ipv6 = dualStack ? `,"EnableIPv6":true,"IPv6Network":"${DUAL_STACK_IPV6_NETWORK}","IPv6SubnetMin":"fd00:0:0:ff00::"` : '';
  try {
    await inEtcdNs([process.execPath, FLANNELCTL, `--etcd-endpoints=${etcd.endpoint}`, 'put', `${PREFIX}/config`, `{"Network":"10.0.0.0/8","SubnetMin":"10.200.0.0"${ipv6},"Backend":{"Type":"${backend}"}}`]);
    const write = (first: number, count: number) => inEtcdNs([process.execPath, WRITER, etcd.endpoint, PREFIX, String(first), String(count), backend, dualStack ? 'dual-stack' : 'ipv4']);
    const logFile = join(dir, 'flanneld.log');
    const start = async () => {
      const fd = openSync(logFile, 'w');
      const child = host.spawn([process.execPath, ...profileArgs, FLANNELD, `--etcd-endpoints=${etcd.endpoint}`, `--iface=${host.iface}`, `--subnet-file=${join(dir, 'subnet.env')}`, `--healthz-port=${HEALTHZ_PORT}`, '--healthz-ip=127.0.0.1'], { stdio: ['ignore', fd, fd] });
      closeSync(fd);
      return child;
    };
    let last = -1;
    // Converged: the daemon follows every lease, and with vxlan the kernel holds a route for each.
    const routesOn = async (family: string, dev: string) => (await host.exec(['ip', family, 'route', 'show', 'dev', dev, 'proto', 'boot'])).stdout.split('\n').filter(Boolean).length;
    const kernelRoutes = async () => (backend === 'vxlan' ? routesOn('-4', 'flannel.1') : -1);
    const kernelRoutes6 = async () => (backend === 'vxlan' && dualStack ? routesOn('-6', 'flannel-v6.1') : -1);
    const converge = async (want: number) =>
      waitFor(
        async () => ((last = await leasesFollowed(host)) === want && (backend !== 'vxlan' || ((await kernelRoutes()) === want && (!dualStack || (await kernelRoutes6()) === want))) ? true : null),
        120_000,
        `${want} leases followed`,
        500,
      ).catch((e: Error) => {
        throw new Error(`${e.message} (the daemon follows ${last})`);
      });
    const stopDaemon = async (c: ReturnType<typeof host.spawn>) => {
      c.kill('SIGTERM');
      await new Promise((r) => c.once('exit', r));
    };

    // Reference: a start with no other lease.
    let d = await start();
    await converge(0);
    const idleStart = cpuOf(d.pid!);
    await stopDaemon(d);

    process.stderr.write(`writing ${n} leases...\n`);
    await write(1, n);
    d = await start();
    const t0 = Date.now();
    await converge(n);
    const atStart = cpuOf(d.pid!) - idleStart;
    process.stderr.write(`${n} leases present at start: ${atStart.toFixed(2)} s CPU beyond an empty start (${idleStart.toFixed(2)} s), converged in ${Date.now() - t0} ms\n`);
    let oneChange = '';
    if (backend === 'vxlan') {
      // One more lease once converged: one small batch (its FDB entry, neighbour entry and route).
      const before1 = readFileSync(logFile, 'utf8').split('\n').length;
      await write(n + 1, 1);
      await converge(n + 1);
      await new Promise((r) => setTimeout(r, 300));
      oneChange = readFileSync(logFile, 'utf8').split('\n').slice(before1 - 1).filter((l) => /kernel state updated/.test(l)).join(' | ');
      process.stderr.write(`one more lease: ${oneChange}\n`);
      await inEtcdNs(['etcdctl', `--endpoints=${etcd.endpoint}`, 'del', `${PREFIX}/subnets/${leaseKeyName(n + 1, dualStack)}`]);
      await converge(n);
    }
    await stopDaemon(d);

    // Leases arriving while it runs: a fresh daemon with only the first batch gone.
    await inEtcdNs(['etcdctl', `--endpoints=${etcd.endpoint}`, 'del', '--prefix', `${PREFIX}/subnets/`]);
    d = await start();
    await converge(0);
    // What the daemon costs doing nothing (iptables checks, etcd keepalives), per second, once start-up work is over.
    await new Promise((r) => setTimeout(r, 5000));
    const idle0 = cpuOf(d.pid!);
    const idleT0 = Date.now();
    await new Promise((r) => setTimeout(r, 5000));
    const idlePerSecond = (cpuOf(d.pid!) - idle0) / ((Date.now() - idleT0) / 1000);
    const before = cpuOf(d.pid!);
    const threadsBefore = threads(d.pid!);
    const t1 = Date.now();
    await write(1, n);
    await converge(n);
    const seconds = (Date.now() - t1) / 1000;
    const arrivingRaw = cpuOf(d.pid!) - before;
    process.stderr.write(`threads while leases arrived: ${threadDelta(threadsBefore, threads(d.pid!))}\n`);
    const arriving = arrivingRaw - idlePerSecond * seconds;
    process.stderr.write(
      `${n} leases arriving while running: ${arriving.toFixed(2)} s CPU beyond idle (${arrivingRaw.toFixed(2)} s in all over ${seconds.toFixed(1)} s; idle ${idlePerSecond.toFixed(3)} s/s)\n`,
    );
    await stopDaemon(d);
    const out = {
      leases: n,
      backend,
      dualStack,
      cpuSecondsAtStart: Number(atStart.toFixed(3)),
      oneChange,
      cpuSecondsEmptyStart: Number(idleStart.toFixed(3)),
      cpuSecondsArriving: Number(arriving.toFixed(3)),
      cpuSecondsArrivingRaw: Number(arrivingRaw.toFixed(3)),
      arrivalSeconds: Number(seconds.toFixed(1)),
    };
    process.stdout.write(JSON.stringify(out) + '\n');
  } finally {
    await etcd.cleanup();
    await set.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
