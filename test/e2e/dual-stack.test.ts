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
import { LocalStore } from '../../src/subnet/local-store.js';
import { parseEnv } from '../../src/subnet/subnet-env.js';

const P = '/coreos.com/network';
const CONFIG = { Network: '10.64.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:64::/56', Backend: { Type: 'host-gw' } };

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
const routes = async (c: Cluster, i: number, family: '-4' | '-6') => (await c.set.hosts[i]!.exec(['ip', family, 'route', 'show', 'dev', 'eth0'], { check: true })).stdout;

describe('host-gw, dual stack: IPv4 and IPv6 routes per peer from one applier', { timeout: 180_000 }, () => {
  let c: Cluster | undefined;

  before(async () => {
    const dir = await mkdtemp(join(tmpdir(), 'fts-ds-'));
    const store = new LocalStore({ dir: join(dir, 'store') });
    await store.put(`${P}/config`, JSON.stringify(CONFIG));
    const set = await createHosts(3, { prefix: 'fds', topology: 'bridge' });
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
    for (const e of all) assert.match(e.value, /^\{"PublicIP":"192\.0\.2\.[123]","PublicIPv6":"2001:db8:64::[123]","BackendType":"host-gw"\}$/);
    const r6 = await routes(c!, 0, '-6');
    for (const j of [1, 2]) assert.match(r6, new RegExp(`${c!.pod6[j]!.replace(/1$/, '')}/64 via 2001:db8:64::${j + 1}`), r6);
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) if (i !== j) {
      await pingsEventually(c!, i, j, false);
      await pingsEventually(c!, i, j, true);
    }
  });

  test('a removed lease takes both of its routes; its owner writes it back and both return', async () => {
    const key = (await c!.store.list(`${P}/subnets/`)).entries.find((e) => e.value.includes('"192.0.2.3"'))!.key;
    const d0 = c!.daemons[0]!;
    const from = d0.lines.length;
    await c!.store.delete(key);
    await waitFor(() => d0.lines.slice(from).some((l) => /lease removed/.test(l)), 10_000, 'h0 sees the removal');
    await waitFor(async () => /via 2001:db8:64::3/.test(await routes(c!, 0, '-6')), 20_000, 'routes back after the owner restores its lease');
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
