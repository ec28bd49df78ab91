/**
 * What a big cluster costs the daemon in Kubernetes mode
 * (npm run bench:kube -- [--nodes 5000] [--changes 1000] [--profile DIR]):
 * a real kube-apiserver holding N nodes (each with flannel's vxlan
 * annotations and a kubelet-sized status), one flanneld with
 * --kube-subnet-mgr and vxlan in a network namespace:
 *   - present at start: CPU from launch until the kernel holds a route for
 *     every node, the daemon alone and with the `ip` processes it ran, and
 *     beyond a start in an empty cluster;
 *   - node changes while it runs: M nodes change their public-ip (FDB
 *     entries move), CPU per change beyond idle;
 *   - peak RSS (VmHWM).
 * With --profile, the daemon's V8 CPU profile of the start is summarised
 * (self time per function), to see what decoding the list costs.
 */
import { closeSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createHosts, run, waitFor, type TestHost } from '../test/helpers/netns.js';
import { FLANNELD } from '../test/helpers/daemon.js';
import { KUBE_SKIP_MESSAGE, kubeBinDir, startKube, createNode } from '../test/helpers/kube.js';
import { parseProcStat, ticksPerSecond } from './cpu.js';
import { summariseProfile } from './cpuprofile.js';

const LOADER = new URL('./kube-loader.js', import.meta.url).pathname;
const API_IP = '192.0.2.254';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(name);
  return i >= 0 ? Number(process.argv[i + 1]) : def;
}

function cpu(pid: number): { self: number; withChildren: number } {
  const st = parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  const t = ticksPerSecond();
  return { self: (st.utime + st.stime) / t, withChildren: (st.utime + st.stime + st.cutime + st.cstime) / t };
}

function peakRssMB(pid: number): number {
  const m = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : -1;
}

/** CPU seconds per thread name ("node" is the main thread; V8's GC helpers and libuv's pool have their own). */
function threadCpu(pid: number): string {
  const by = new Map<string, number>();
  for (const tid of readdirSync(`/proc/${pid}/task`)) {
    try {
      const f = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
      const name = f.slice(f.indexOf('(') + 1, f.lastIndexOf(')'));
      const st = parseProcStat(f);
      by.set(name, (by.get(name) ?? 0) + (st.utime + st.stime) / ticksPerSecond());
    } catch {
      /* thread gone */
    }
  }
  return [...by].filter(([, v]) => v >= 0.01).map(([k, v]) => `${k} ${v.toFixed(2)} s`).join(', ');
}

async function routes(h: TestHost): Promise<number> {
  return (await h.exec(['ip', '-4', 'route', 'show', 'dev', 'flannel.1'])).stdout.split('\n').filter(Boolean).length;
}

async function fdbTo(h: TestHost, prefix: string): Promise<number> {
  return (await h.exec(['bridge', 'fdb', 'show', 'dev', 'flannel.1'])).stdout.split('\n').filter((l) => l.includes(`dst ${prefix}`)).length;
}

async function main(): Promise<void> {
  if (!kubeBinDir()) {
    process.stderr.write(`bench:kube skipped: ${KUBE_SKIP_MESSAGE}\n`);
    return;
  }
  const n = arg('--nodes', 5000);
  const changes = Math.min(arg('--changes', 1000), n);
  const pi = process.argv.indexOf('--profile');
  const profileDir = pi >= 0 ? process.argv[pi + 1]! : null;
  const set = await createHosts(1, { prefix: 'ftsbk', topology: 'bridge' });
  const dir = mkdtempSync(join(tmpdir(), 'ftsbk-'));
  const host = set.hosts[0]!;
  await run('ip', ['-n', set.switchNs!, 'addr', 'add', `${API_IP}/24`, 'dev', 'br0'], { check: true });
  const k = await startKube(join(dir, 'kube'), set.switchNs!, API_IP);
  const log = (m: string) => process.stderr.write(m + '\n');
  try {
    await createNode(k, 'bench-self', ['10.255.255.0/24'], '192.0.2.1');
    await writeFile(join(dir, 'net-conf.json'), JSON.stringify({ Network: '10.0.0.0/8', Backend: { Type: 'vxlan' } }));
    await writeFile(
      join(dir, 'kubeconfig'),
      `apiVersion: v1\nkind: Config\nclusters:\n- name: b\n  cluster:\n    server: ${k.server}\n    certificate-authority: ${k.caFile}\nusers:\n- name: a\n  user:\n    token: ${k.adminToken}\ncontexts:\n- name: b\n  context: {cluster: b, user: a}\ncurrent-context: b\n`,
      { mode: 0o600 },
    );
    const load = (args: string[]) => run('ip', ['netns', 'exec', set.switchNs!, process.execPath, LOADER, k.server, k.caFile, k.adminToken, ...args], { check: true, timeoutMs: 1_200_000 });
    const logFile = join(dir, 'flanneld.log');
    const start = (profile: boolean): ChildProcess => {
      const fd = openSync(logFile, 'w');
      const prof = profile && profileDir ? ['--cpu-prof', `--cpu-prof-dir=${profileDir}`] : [];
      const child = host.spawn(
        [process.execPath, ...prof, FLANNELD, '--kube-subnet-mgr', `--kubeconfig-file=${join(dir, 'kubeconfig')}`, `--net-config-path=${join(dir, 'net-conf.json')}`, `--iface=${host.iface}`, `--subnet-file=${join(dir, 'subnet.env')}`],
        { stdio: ['ignore', fd, fd], env: { ...process.env, NODE_NAME: 'bench-self' } },
      );
      closeSync(fd);
      return child;
    };
    const stop = async (c: ChildProcess) => {
      c.kill('SIGTERM');
      await new Promise((r) => c.once('exit', r));
    };
    const converge = (want: number) => waitFor(async () => ((await routes(host)) === want && /\] running/.test(readFileSync(logFile, 'utf8')) ? true : null), 300_000, `${want} routes`, 200);

    // An empty cluster: what a start costs by itself.
    let d = start(false);
    await converge(0);
    const empty = cpu(d.pid!);
    await stop(d);
    await host.exec(['ip', 'link', 'del', 'flannel.1']);

    log(`creating ${n} nodes...`);
    const tc = Date.now();
    await load(['create', '1', String(n)]);
    log(`created ${n} nodes in ${((Date.now() - tc) / 1000).toFixed(1)} s`);
    const listBytes = Number((await k.kubectl(['get', '--raw', '/api/v1/nodes'])).stdout.length);

    // With --profile, one start alone is profiled (the daemon is stopped once converged, which writes the profile).
    if (profileDir) {
      d = start(true);
      await converge(n);
      await stop(d);
      await host.exec(['ip', 'link', 'del', 'flannel.1']);
    }
    d = start(false);
    const t0 = Date.now();
    await converge(n);
    const atStart = cpu(d.pid!);
    const startMs = Date.now() - t0;
    const rssStart = peakRssMB(d.pid!);
    const threadsAtStart = threadCpu(d.pid!);
    log(`${n} nodes present at start: converged in ${startMs} ms; daemon CPU ${atStart.self.toFixed(2)} s (${(atStart.self - empty.self).toFixed(2)} s beyond an empty start), with ip ${atStart.withChildren.toFixed(2)} s; peak RSS ${rssStart.toFixed(0)} MB`);
    log(`  by thread: ${threadsAtStart}`);

    // Idle cost per second once converged (watch bookmarks, iptables checks).
    await new Promise((r) => setTimeout(r, 3000));
    const i0 = cpu(d.pid!).withChildren;
    const it0 = Date.now();
    await new Promise((r) => setTimeout(r, 5000));
    const idlePerS = (cpu(d.pid!).withChildren - i0) / ((Date.now() - it0) / 1000);

    log(`${changes} nodes change their public-ip...`);
    const c0 = cpu(d.pid!);
    const tch = Date.now();
    await load(['change', '1', String(changes), '1']);
    await waitFor(async () => ((await fdbTo(host, '198.19.')) === changes ? true : null), 300_000, `${changes} FDB entries moved`, 200);
    const chSeconds = (Date.now() - tch) / 1000;
    const c1 = cpu(d.pid!);
    const perChangeMs = ((c1.withChildren - c0.withChildren - idlePerS * chSeconds) / changes) * 1000;
    const perChangeSelfMs = ((c1.self - c0.self) / changes) * 1000;
    const rssPeak = peakRssMB(d.pid!);
    log(`${changes} changes applied in ${chSeconds.toFixed(1)} s: ${perChangeMs.toFixed(2)} ms CPU per change with ip (${perChangeSelfMs.toFixed(2)} ms the daemon alone); peak RSS ${rssPeak.toFixed(0)} MB`);
    await stop(d);

    // A restart: the kernel already holds every route (a daemon upgraded or restarted in place).
    d = start(false);
    await converge(n);
    const restart = cpu(d.pid!);
    log(`restart with the kernel state in place: daemon CPU ${restart.self.toFixed(2)} s, with ip ${restart.withChildren.toFixed(2)} s`);
    await stop(d);

    const out = {
      nodes: n,
      nodeListBytes: listBytes,
      startConvergedMs: startMs,
      cpuSecondsAtStartDaemon: Number(atStart.self.toFixed(3)),
      cpuSecondsAtStartBeyondEmpty: Number((atStart.self - empty.self).toFixed(3)),
      cpuSecondsAtStartWithIp: Number(atStart.withChildren.toFixed(3)),
      cpuSecondsEmptyStart: Number(empty.self.toFixed(3)),
      changes,
      cpuMsPerChangeWithIp: Number(perChangeMs.toFixed(3)),
      cpuMsPerChangeDaemon: Number(perChangeSelfMs.toFixed(3)),
      peakRssMB: Number(rssPeak.toFixed(1)),
      cpuSecondsRestartDaemon: Number(restart.self.toFixed(3)),
    };
    process.stdout.write(JSON.stringify(out) + '\n');
    if (profileDir) {
      for (const f of readdirSync(profileDir).filter((x) => x.endsWith('.cpuprofile'))) {
        log(`profile ${f} (self time):`);
        for (const l of summariseProfile(join(profileDir, f), 15)) log('  ' + l);
      }
    }
  } finally {
    await k.stop();
    await set.destroy();
    rmSync(dir, { recursive: true, force: true });
  }
}

await main();
