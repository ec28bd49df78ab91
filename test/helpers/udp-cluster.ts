/**
 * Clusters of udp-backend flanneld hosts in network namespaces for the e2e
 * tests: an embedded store (or etcd) holding the config, one daemon per
 * host, a pod bridge per host, and the traffic checks the tests share.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHosts, isListening, waitFor, type HostSet } from './netns.js';
import { startDaemon, type DaemonProcess } from './daemon.js';
import { attachPodBridge } from './pod-bridge.js';
import { LocalStore } from '../../src/subnet/local-store.js';
import { parseEnv } from '../../src/subnet/subnet-env.js';

export const P = '/coreos.com/network';
export const CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}';

export interface Cluster {
  set: HostSet;
  dir: string;
  storeArgs: string[];
  daemons: (DaemonProcess | null)[];
  /** Pod gateway address (FLANNEL_SUBNET's first address) of host i. */
  pod: string[];
  /** Extra environment for host i's daemon. */
  hostEnv?: (i: number) => NodeJS.ProcessEnv;
}

export function startHost(c: Cluster, i: number, extra: string[] = [], iface = c.set.hosts[i]!.iface): DaemonProcess {
  const h = c.set.hosts[i]!;
  const d = startDaemon([...c.storeArgs, `--iface=${iface}`, `--subnet-file=${join(c.dir, `h${i}.env`)}`, ...extra], {
    name: `h${i}`,
    prefix: ['ip', 'netns', 'exec', h.ns],
    env: c.hostEnv?.(i),
  });
  c.daemons[i] = d;
  return d;
}

export async function subnetEnv(c: Cluster, i: number): Promise<Record<string, string>> {
  return parseEnv(await readFile(join(c.dir, `h${i}.env`), 'utf8'));
}

/** Start every host's daemon (`start` picks flags per host), then give each its pod bridge. */
export async function bringUp(c: Cluster, start: (i: number) => DaemonProcess = (i) => startHost(c, i)): Promise<void> {
  const ds = c.set.hosts.map((_, i) => start(i));
  await Promise.all(ds.map((d) => d.waitForLine(/running/, 20_000)));
  for (const [i, h] of c.set.hosts.entries()) {
    const env = await subnetEnv(c, i);
    assert.equal(env.FLANNEL_MTU, '1472');
    await attachPodBridge(h, env);
    c.pod[i] = env.FLANNEL_SUBNET!.split('/')[0]!;
  }
}

export async function ping(c: Cluster, from: number, to: number, count = 2): Promise<{ code: number; out: string }> {
  const r = await c.set.hosts[from]!.exec(['ping', '-c', String(count), '-i', '0.2', '-W', '1', '-I', c.pod[from]!, c.pod[to]!], { timeoutMs: 15_000 });
  return { code: r.code, out: r.stdout + r.stderr };
}

export async function pingsEventually(c: Cluster, from: number, to: number): Promise<void> {
  await waitFor(async () => (await ping(c, from, to)).code === 0, 15_000, `ping host${from} -> host${to}`, 200);
}

export async function pingMatrix(c: Cluster): Promise<void> {
  for (let i = 0; i < c.set.hosts.length; i++) for (let j = 0; j < c.set.hosts.length; j++) if (i !== j) await pingsEventually(c, i, j);
}

/** A 2-second iperf3 TCP stream between pod addresses; asserts it completes with real throughput. */
export async function tcpFlows(c: Cluster, client: number, server: number): Promise<void> {
  const srv = c.set.hosts[server]!.spawn(['iperf3', '-s', '-1', '-B', c.pod[server]!], { stdio: 'ignore' });
  await waitFor(() => isListening(c.set.hosts[server]!, 5201), 5000, 'iperf3 server');
  const r = await c.set.hosts[client]!.exec(['iperf3', '-c', c.pod[server]!, '-B', c.pod[client]!, '-t', '2', '-J'], { timeoutMs: 20_000 });
  srv.kill();
  assert.equal(r.code, 0, r.stderr || r.stdout.slice(0, 500));
  const bps = (JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
  assert.ok(bps > 10e6, `host${client} -> host${server}: ${bps} bit/s`);
}

export async function teardown(c: Cluster | undefined): Promise<void> {
  if (!c) return;
  await Promise.all(c.daemons.map((d) => d?.stop('SIGKILL')));
  await c.set.destroy();
  await rm(c.dir, { recursive: true, force: true });
}

/** Host 0 serves /healthz and /metrics on 127.0.0.1:8471 of its namespace. */
export const withHealthzOnHost0 = (c: Cluster) => (i: number) => startHost(c, i, i === 0 ? ['--healthz-ip=127.0.0.1', '--healthz-port=8471'] : []);

/** Hosts on a bridge sharing an embedded store that already holds the udp config. */
export async function localCluster(n: number, prefix: string, config = CONFIG): Promise<{ c: Cluster; store: LocalStore }> {
  const dir = await mkdtemp(join(tmpdir(), `fts-${prefix}-`));
  const store = new LocalStore({ dir: join(dir, 'store') });
  await store.put(`${P}/config`, config);
  const c = { set: await createHosts(n, { prefix, topology: 'bridge' }), dir, storeArgs: [`--local-store=${join(dir, 'store')}`], daemons: [], pod: [] };
  return { c, store };
}

