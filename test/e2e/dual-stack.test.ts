/**
 * Dual stack on the kernel backends: three hosts on one link with IPv4 and
 * IPv6 addresses, host-gw with EnableIPv6: each host routes every other
 * host's IPv4 subnet via its PublicIP and its IPv6 subnet via its
 * PublicIPv6, from one applier that owns both families. Pods ping each other
 * over both families; a removed lease takes both routes; a restart writes
 * nothing to the kernel.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHosts, run, waitFor, type HostSet } from '../helpers/netns.js';
import { startDaemon, type DaemonProcess } from '../helpers/daemon.js';
import { attachPodBridge } from '../helpers/pod-bridge.js';
import { iperfRate } from '../helpers/iperf.js';
import { LocalStore } from '../../src/subnet/local-store.js';
import { parseEnv } from '../../src/subnet/subnet-env.js';

const P = '/coreos.com/network';
const config = (type: string) => ({ Network: '10.64.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:64::/56', Backend: { Type: type } });

interface Cluster {
  set: HostSet;
  dir: string;
  store: LocalStore;
  daemons: DaemonProcess[];
  pod: string[];
  pod6: string[];
}

function startHost(c: Cluster, i: number): DaemonProcess {
  const h = c.set.hosts[i]!;
  const d = startDaemon([`--local-store=${join(c.dir, 'store')}`, `--iface=${h.iface}`, `--subnet-file=${join(c.dir, `h${i}.env`)}`], { name: `h${i}`, prefix: ['ip', 'netns', 'exec', h.ns] });
  c.daemons[i] = d;
  return d;
}

const ping = (c: Cluster, from: number, to: number, v6: boolean) =>
  c.set.hosts[from]!.exec(['ping', v6 ? '-6' : '-4', '-c', '1', '-W', '1', '-I', (v6 ? c.pod6 : c.pod)[from]!, (v6 ? c.pod6 : c.pod)[to]!], { timeoutMs: 5000 });
const pingsEventually = (c: Cluster, from: number, to: number, v6: boolean) =>
  waitFor(async () => (await ping(c, from, to, v6)).code === 0, 20_000, `ping${v6 ? ' -6' : ''} h${from} -> h${to}`, 200);
const routes = async (c: Cluster, i: number, family: '-4' | '-6', dev: string) => (await c.set.hosts[i]!.exec(['ip', family, 'route', 'show', 'dev', dev], { check: true })).stdout;

for (const type of ['host-gw', 'vxlan'] as const) describe(`${type}, dual stack: IPv4 and IPv6 per peer from one applier`, { timeout: 180_000 }, () => {
  let c: Cluster | undefined;
  // host-gw routes IPv6 subnets via each peer's PublicIPv6; vxlan through flannel-v6.1 (flannel's second device).
  const dev6 = type === 'vxlan' ? 'flannel-v6.1' : 'eth0';
  const peer6 = async (i: number, j: number) =>
    type === 'vxlan' ? (await c!.set.hosts[i]!.exec(['bridge', 'fdb', 'show', 'dev', dev6], { check: true })).stdout.includes(`dst 2001:db8:64::${j + 1}`) : (await routes(c!, i, '-6', dev6)).includes(`via 2001:db8:64::${j + 1}`);

  before(async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fts-ds-'));
    const store = new LocalStore({ dir: join(dir, 'store') });
    await store.put(`${P}/config`, JSON.stringify(config(type)));
    const set = await createHosts(3, { prefix: `fds${type[0]}`, topology: 'bridge' });
    c = { set, dir, store, daemons: [], pod: [], pod6: [] };
    for (const [i, h] of set.hosts.entries()) {
      await run('ip', ['-n', h.ns, '-6', 'addr', 'add', `2001:db8:64::${i + 1}/64`, 'dev', h.iface, 'nodad'], { check: true });
      await h.exec(['sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1'], { check: true });
    }
    const ds = set.hosts.map((_, i) => startHost(c!, i));
    await Promise.all(ds.map((d) => d.waitForLine(/\[flanneld\] running$/, 30_000)));
    for (const [i, h] of set.hosts.entries()) {
      const env = parseEnv(await readFile(join(dir, `h${i}.env`), 'utf8'));
      await attachPodBridge(h, env);
      await h.exec(['ip', '-6', 'addr', 'add', env.FLANNEL_IPV6_SUBNET!, 'dev', 'cni0', 'nodad'], { check: true });
      c.pod[i] = env.FLANNEL_SUBNET!.split('/')[0]!;
      c.pod6[i] = env.FLANNEL_IPV6_SUBNET!.split('/')[0]!;
    }
  });

  after(async () => {
    if (!c) return;
    await Promise.all(c.daemons.map((d) => d?.stop('SIGKILL')));
    await c.set.destroy();
    await rm(c.dir, { recursive: true, force: true });
  });

  test('leases carry PublicIPv6 and both subnets; each host routes both families of every peer; pods ping over IPv4 and IPv6', async () => {
    const env0 = parseEnv(await readFile(join(c!.dir, 'h0.env'), 'utf8'));
    assert.equal(env0.FLANNEL_IPV6_NETWORK, 'fd00:64::/56');
    const all = (await c!.store.list(`${P}/subnets/`)).entries;
    assert.equal(all.length, 3);
    const mac = '"[0-9a-f]{2}(:[0-9a-f]{2}){5}"';
    const lease =
      type === 'vxlan'
        ? new RegExp(`^\\{"PublicIP":"192\\.0\\.2\\.[123]","PublicIPv6":"2001:db8:64::[123]","BackendType":"vxlan","BackendData":\\{"VNI":1,"VtepMAC":${mac}\\},"BackendV6Data":\\{"VNI":1,"VtepMAC":${mac}\\}\\}$`)
        : /^\{"PublicIP":"192\.0\.2\.[123]","PublicIPv6":"2001:db8:64::[123]","BackendType":"host-gw"\}$/;
    for (const e of all) assert.match(e.value, lease);
    const r6 = await routes(c!, 0, '-6', dev6);
    for (const j of [1, 2]) {
      const sn = `${c!.pod6[j]!.replace(/1$/, '')}/64`;
      assert.match(r6, new RegExp(type === 'vxlan' ? `${sn} via ${c!.pod6[j]!.replace(/1$/, '')} .*onlink` : `${sn} via 2001:db8:64::${j + 1}`), r6);
      assert.ok(await peer6(0, j), `h0 reaches h${j} over IPv6`);
    }
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) if (i !== j) {
      await pingsEventually(c!, i, j, false);
      await pingsEventually(c!, i, j, true);
    }
  });

  test('iperf3 between IPv6 pods', async (t) => {
    const bps = await iperfRate(c!.set.hosts[0]!, c!.pod6[0]!, c!.set.hosts[1]!, c!.pod6[1]!, 2);
    t.diagnostic(`${type} IPv6 pods: ${(bps / 1e9).toFixed(2)} Gbit/s`);
    assert.ok(bps > 10e6, `${bps} bit/s`);
  });

  test('a removed lease takes both of its routes; its owner writes it back and both return', async () => {
    const key = (await c!.store.list(`${P}/subnets/`)).entries.find((e) => e.value.includes('"192.0.2.3"'))!.key;
    const d0 = c!.daemons[0]!;
    const from = d0.lines.length;
    await c!.store.delete(key);
    await waitFor(() => d0.lines.slice(from).some((l) => /lease removed/.test(l)), 10_000, 'h0 sees the removal');
    await waitFor(() => peer6(0, 2), 20_000, 'routes back after the owner restores its lease');
    await pingsEventually(c!, 0, 2, true);
  });

  test('a restarted daemon finds both families in place and writes nothing', async () => {
    await c!.daemons[1]!.stop();
    const d = startHost(c!, 1);
    await d.waitForLine(/\[flanneld\] running$/, 30_000);
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(!d.lines.some((l) => /kernel state updated/.test(l)), d.lines.join('\n'));
    await pingsEventually(c!, 1, 0, true);
    await pingsEventually(c!, 2, 1, false);
  });
});
