/**
 * IPv6 on the kernel backends, on a real etcd: three hosts on one link
 * with IPv4 and IPv6 addresses.
 * - Dual stack, host-gw and vxlan (EnableIPv6): each host routes every
 *   other host's IPv4 subnet and IPv6 subnet (host-gw via its PublicIPv6,
 *   vxlan through flannel-v6.<VNI>) from one applier owning both families.
 *   Pods ping each other over both; a removed lease takes both routes; a
 *   restart writes nothing to the kernel.
 * - IPv6-only vxlan (EnableIPv4 false): flannel-v6.1 alone, leases with
 *   PublicIP 0.0.0.0 as flannel writes them, owned by their PublicIPv6;
 *   DirectRouting over IPv6. IPv6-only host-gw: routes via PublicIPv6.
 * - --ip-masq for IPv6 with ip6tables and with nftables (table ip6
 *   flannel-ipv6): real packets leave masqueraded, pod to pod keeps its
 *   source.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHosts, run, waitFor, type HostSet, type TestHost } from '../helpers/netns.js';
import { startDaemon, type DaemonProcess } from '../helpers/daemon.js';
import { attachPodBridge } from '../helpers/pod-bridge.js';
import { iperfRate } from '../helpers/iperf.js';
import { etcdKeysIn, startEtcd, type EtcdKeys, type TestEtcd } from '../helpers/etcd.js';
import { peerAddressSeen } from '../helpers/peer-address.js';
import { parseEnv } from '../../src/subnet/subnet-env.js';

const P = '/coreos.com/network';
const dualStack = (backend: Record<string, unknown>, extra: Record<string, unknown> = {}) => ({ Network: '10.64.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:64::/56', Backend: backend, ...extra });
const ipv6Only = (backend: Record<string, unknown>) => ({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:64::/56', Backend: backend });
/** The switch's own addresses: "the outside world" for masquerade checks, and where etcd listens. */
const OUTSIDE4 = '192.0.2.254';
const OUTSIDE6 = '2001:db8:64::fe';

interface Cluster {
  set: HostSet;
  dir: string;
  etcd: TestEtcd;
  store: EtcdKeys;
  daemons: DaemonProcess[];
  pod: string[];
  pod6: string[];
}

async function cluster(prefix: string, config: object, n = 3): Promise<Cluster> {
  const set = await createHosts(n, { prefix, topology: 'bridge' });
  await run('ip', ['-n', set.switchNs!, 'addr', 'add', `${OUTSIDE4}/24`, 'dev', 'br0'], { check: true });
  await run('ip', ['-n', set.switchNs!, '-6', 'addr', 'add', `${OUTSIDE6}/64`, 'dev', 'br0', 'nodad'], { check: true });
  for (const [i, h] of set.hosts.entries()) {
    await run('ip', ['-n', h.ns, '-6', 'addr', 'add', `2001:db8:64::${i + 1}/64`, 'dev', h.iface, 'nodad'], { check: true });
    await h.exec(['sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1'], { check: true });
  }
  const etcd = await startEtcd({ netns: set.switchNs!, host: OUTSIDE4 });
  const c: Cluster = { set, etcd, store: etcdKeysIn(set.switchNs!, etcd), dir: await mkdtemp(join(tmpdir(), `fts-${prefix}-`)), daemons: [], pod: [], pod6: [] };
  await c.store.put(`${P}/config`, JSON.stringify(config));
  return c;
}

function startHost(c: Cluster, i: number, extra: string[] = []): DaemonProcess {
  const h = c.set.hosts[i]!;
  const d = startDaemon([`--etcd-endpoints=${c.etcd.endpoint}`, `--iface=${h.iface}`, `--subnet-file=${join(c.dir, `h${i}.env`)}`, ...extra], { name: `h${i}`, prefix: ['ip', 'netns', 'exec', h.ns] });
  c.daemons[i] = d;
  return d;
}

/** Start every daemon, then give each host its pod bridge (once) with the addresses subnet.env names. */
async function bringUp(c: Cluster, extra: string[] = []): Promise<void> {
  const ds = c.set.hosts.map((_, i) => startHost(c, i, extra));
  await Promise.all(ds.map((d) => d.waitForLine(/\[flanneld\] running$/, 30_000)));
  for (const [i, h] of c.set.hosts.entries()) {
    const env = parseEnv(await readFile(join(c.dir, `h${i}.env`), 'utf8'));
    if (c.pod[i] === undefined && c.pod6[i] === undefined) await attachPodBridge(h, env);
    c.pod[i] = env.FLANNEL_SUBNET?.split('/')[0] ?? '';
    c.pod6[i] = env.FLANNEL_IPV6_SUBNET?.split('/')[0] ?? '';
  }
}

async function teardown(c: Cluster | undefined): Promise<void> {
  if (!c) return;
  await Promise.all(c.daemons.map((d) => d?.stop('SIGKILL')));
  await c.etcd.cleanup();
  await c.set.destroy();
  await rm(c.dir, { recursive: true, force: true });
}

const ping = (c: Cluster, from: number, to: number, v6: boolean) =>
  c.set.hosts[from]!.exec(['ping', v6 ? '-6' : '-4', '-c', '1', '-W', '1', '-I', (v6 ? c.pod6 : c.pod)[from]!, (v6 ? c.pod6 : c.pod)[to]!], { timeoutMs: 5000 });
const pingsEventually = (c: Cluster, from: number, to: number, v6: boolean) =>
  waitFor(async () => (await ping(c, from, to, v6)).code === 0, 20_000, `ping${v6 ? ' -6' : ''} h${from} -> h${to}`, 200);
async function pingMatrix(c: Cluster, families: boolean[]): Promise<void> {
  for (let i = 0; i < c.set.hosts.length; i++) for (let j = 0; j < c.set.hosts.length; j++) if (i !== j) for (const v6 of families) await pingsEventually(c, i, j, v6);
}
const show = async (h: TestHost, args: string[]) => (await h.exec(args, { check: true })).stdout;
const routes = (c: Cluster, i: number, family: '-4' | '-6', dev: string) => show(c.set.hosts[i]!, ['ip', family, 'route', 'show', 'dev', dev]);
/** The network address of a pod gateway address ("fd00:64:0:3::1" -> "fd00:64:0:3::"). */
const net6 = (pod6: string) => pod6.replace(/1$/, '');
const MAC = '"[0-9a-f]{2}(:[0-9a-f]{2}){5}"';

for (const type of ['host-gw', 'vxlan'] as const) describe(`${type}, dual stack: IPv4 and IPv6 per peer from one applier`, { timeout: 180_000 }, () => {
  let c: Cluster | undefined;
  // host-gw routes IPv6 subnets via each peer's PublicIPv6; vxlan through flannel-v6.1 (flannel's second device).
  const dev6 = type === 'vxlan' ? 'flannel-v6.1' : 'eth0';
  const peer6 = async (i: number, j: number) =>
    type === 'vxlan' ? (await show(c!.set.hosts[i]!, ['bridge', 'fdb', 'show', 'dev', dev6])).includes(`dst 2001:db8:64::${j + 1}`) : (await routes(c!, i, '-6', dev6)).includes(`via 2001:db8:64::${j + 1}`);

  before(async () => {
    c = await cluster(`fds${type[0]}`, dualStack({ Type: type }));
    await bringUp(c);
  });
  after(() => teardown(c));

  test('leases carry PublicIPv6 and both subnets; each host routes both families of every peer; pods ping over IPv4 and IPv6', async () => {
    const env0 = parseEnv(await readFile(join(c!.dir, 'h0.env'), 'utf8'));
    assert.equal(env0.FLANNEL_IPV6_NETWORK, 'fd00:64::/56');
    const all = (await c!.store.list(`${P}/subnets/`)).entries;
    assert.equal(all.length, 3);
    const lease =
      type === 'vxlan'
        ? new RegExp(`^\\{"PublicIP":"192\\.0\\.2\\.[123]","PublicIPv6":"2001:db8:64::[123]","BackendType":"vxlan","BackendData":\\{"VNI":1,"VtepMAC":${MAC}\\},"BackendV6Data":\\{"VNI":1,"VtepMAC":${MAC}\\}\\}$`)
        : /^\{"PublicIP":"192\.0\.2\.[123]","PublicIPv6":"2001:db8:64::[123]","BackendType":"host-gw"\}$/;
    for (const e of all) assert.match(e.value, lease);
    const r6 = await routes(c!, 0, '-6', dev6);
    for (const j of [1, 2]) {
      const sn = `${net6(c!.pod6[j]!)}/64`;
      assert.match(r6, new RegExp(type === 'vxlan' ? `${sn} via ${net6(c!.pod6[j]!)} .*onlink` : `${sn} via 2001:db8:64::${j + 1}`), r6);
      assert.ok(await peer6(0, j), `h0 reaches h${j} over IPv6`);
    }
    await pingMatrix(c!, [false, true]);
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

  test('--dry-run prints the missing state of both families and changes nothing', async () => {
    const h = c!.set.hosts[0]!;
    await c!.daemons[0]!.stop('SIGTERM');
    const sn4 = `${c!.pod[1]!.replace(/\.1$/, '.0')}/24`;
    const sn6 = `${net6(c!.pod6[1]!)}/64`;
    await h.exec(['ip', '-4', 'route', 'del', sn4], { check: true });
    await h.exec(['ip', '-6', 'route', 'del', sn6], { check: true });
    const d = startHost(c!, 0, ['--dry-run']);
    assert.equal(await d.exited, 0, d.lines.join('\n'));
    const printed = d.lines.filter((l) => /^(ip|bridge) /.test(l));
    const want =
      type === 'vxlan'
        ? [`ip route replace ${sn4} via ${sn4.split('/')[0]} dev flannel.1 onlink`, `ip route replace ${sn6} via ${net6(c!.pod6[1]!)} dev flannel-v6.1 onlink`]
        : [`ip route replace ${sn4} via 192.0.2.2 dev eth0`, `ip route replace ${sn6} via 2001:db8:64::2 dev eth0`];
    assert.deepEqual(printed.filter((l) => l.startsWith('ip route')), want, printed.join('\n'));
    assert.ok(!(await routes(c!, 0, '-6', dev6)).includes(sn6), 'nothing changed');
    await startHost(c!, 0).waitForLine(/\[flanneld\] running$/, 30_000);
    await pingsEventually(c!, 0, 1, false);
    await pingsEventually(c!, 0, 1, true);
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

describe('vxlan on an IPv6-only network (EnableIPv4 false): flannel-v6.1 alone', { timeout: 180_000 }, () => {
  let c: Cluster | undefined;
  before(async () => {
    c = await cluster('fdsv6', ipv6Only({ Type: 'vxlan' }));
    await bringUp(c);
  });
  after(() => teardown(c));

  test('leases as flannel writes them (PublicIP 0.0.0.0, BackendV6Data only); no IPv4 device or subnet; pods ping over IPv6', async () => {
    const all = (await c!.store.list(`${P}/subnets/`)).entries;
    assert.equal(all.length, 3);
    for (const e of all) {
      assert.match(e.key, /\/subnets\/0\.0\.0\.0-0&fd00:64:0:[0-9a-f]+::-64$/);
      assert.match(e.value, new RegExp(`^\\{"PublicIP":"0\\.0\\.0\\.0","PublicIPv6":"2001:db8:64::[123]","BackendType":"vxlan","BackendV6Data":\\{"VNI":1,"VtepMAC":${MAC}\\}\\}$`));
    }
    const env = parseEnv(await readFile(join(c!.dir, 'h0.env'), 'utf8'));
    assert.equal(env.FLANNEL_SUBNET, undefined);
    assert.equal(env.FLANNEL_NETWORK, undefined);
    // An IPv6 outer header is 20 bytes longer: 1500 - 50 - 20.
    assert.equal(env.FLANNEL_MTU, '1430');
    const h0 = c!.set.hosts[0]!;
    assert.notEqual((await h0.exec(['ip', 'link', 'show', 'dev', 'flannel.1'])).code, 0, 'no flannel.1');
    const link = (JSON.parse(await show(h0, ['ip', '-d', '-json', 'link', 'show', 'dev', 'flannel-v6.1'])) as { mtu: number; linkinfo: { info_data: { local6?: string } } }[])[0]!;
    assert.equal(link.linkinfo.info_data.local6, '2001:db8:64::1');
    assert.equal(link.mtu, 1430);
    const r6 = await routes(c!, 0, '-6', 'flannel-v6.1');
    for (const j of [1, 2]) assert.match(r6, new RegExp(`${net6(c!.pod6[j]!)}/64 via ${net6(c!.pod6[j]!)} .*onlink`), r6);
    await pingMatrix(c!, [true]);
  });

  test('a restarted daemon keeps its lease (found by its PublicIPv6) and writes nothing', async () => {
    const before6 = c!.pod6[1];
    await c!.daemons[1]!.stop();
    const d = startHost(c!, 1);
    await d.waitForLine(/\[flanneld\] running$/, 30_000);
    await new Promise((r) => setTimeout(r, 500));
    assert.ok(!d.lines.some((l) => /kernel state updated/.test(l)), d.lines.join('\n'));
    assert.equal(parseEnv(await readFile(join(c!.dir, 'h1.env'), 'utf8')).FLANNEL_IPV6_SUBNET?.split('/')[0], before6);
    assert.equal((await c!.store.list(`${P}/subnets/`)).entries.length, 3, 'no second lease');
    await pingsEventually(c!, 1, 0, true);
  });

  test('DirectRouting: peers on our link get plain IPv6 routes via their PublicIPv6', async () => {
    await Promise.all(c!.daemons.map((d) => d.stop()));
    await c!.store.put(`${P}/config`, JSON.stringify(ipv6Only({ Type: 'vxlan', DirectRouting: true })));
    await bringUp(c!);
    for (const j of [1, 2]) {
      await waitFor(async () => (await routes(c!, 0, '-6', 'eth0')).includes(`${net6(c!.pod6[j]!)}/64 via 2001:db8:64::${j + 1}`), 10_000, `direct route to h${j}`);
    }
    assert.doesNotMatch(await routes(c!, 0, '-6', 'flannel-v6.1'), /via/, 'no route through the vxlan device');
    await pingMatrix(c!, [true]);
  });
});

describe('host-gw on an IPv6-only network: IPv6 routes via PublicIPv6 only', { timeout: 120_000 }, () => {
  let c: Cluster | undefined;
  before(async () => {
    c = await cluster('fdsg6', ipv6Only({ Type: 'host-gw' }));
    await bringUp(c);
  });
  after(() => teardown(c));

  test('leases as flannel writes them, one IPv6 route per peer and no IPv4 one, pods ping over IPv6', async () => {
    for (const e of (await c!.store.list(`${P}/subnets/`)).entries) assert.match(e.value, /^\{"PublicIP":"0\.0\.0\.0","PublicIPv6":"2001:db8:64::[123]","BackendType":"host-gw"\}$/);
    assert.equal(parseEnv(await readFile(join(c!.dir, 'h0.env'), 'utf8')).FLANNEL_MTU, '1500');
    const r6 = await routes(c!, 0, '-6', 'eth0');
    for (const j of [1, 2]) assert.match(r6, new RegExp(`${net6(c!.pod6[j]!)}/64 via 2001:db8:64::${j + 1}`), r6);
    assert.doesNotMatch(await show(c!.set.hosts[0]!, ['ip', '-4', 'route', 'show']), /10\.64\./);
    await pingMatrix(c!, [true]);
  });
});

for (const nft of [false, true]) {
  describe(`--ip-masq for IPv6 with ${nft ? 'nftables (table ip6 flannel-ipv6)' : 'ip6tables'}: real packets`, { timeout: 90_000 }, () => {
    let c: Cluster | undefined;
    before(async () => {
      c = await cluster(nft ? 'fdsmn' : 'fdsmt', dualStack({ Type: 'host-gw' }, { EnableNFTables: nft }), 2);
      await bringUp(c, ['--ip-masq']);
      await pingsEventually(c, 0, 1, true);
    });
    after(() => teardown(c));

    test('an IPv6 pod talking outside IPv6Network leaves masqueraded; between pod subnets the source is kept; both families', async () => {
      const h0 = c!.set.hosts[0]!;
      assert.equal(await peerAddressSeen(c!.set.switchNs!, OUTSIDE6, h0, c!.pod6[0]!), '2001:db8:64::1', 'masqueraded to the host address');
      assert.equal(await peerAddressSeen(c!.set.hosts[1]!.ns, c!.pod6[1]!, h0, c!.pod6[0]!), c!.pod6[0]!, 'pod to pod keeps its source');
      assert.equal(await peerAddressSeen(c!.set.switchNs!, OUTSIDE4, h0, c!.pod[0]!), h0.ip, 'IPv4 masqueraded too');
      if (nft) {
        const t = await show(h0, ['nft', 'list', 'table', 'ip6', 'flannel-ipv6']);
        assert.match(t, /ip6 saddr fd00:64::\/56 ip6 daddr != ff00::\/8 masquerade fully-random/);
        assert.match(t, /ip6 daddr fd00:64::\/56 accept/);
        await h0.exec(['nft', 'delete', 'table', 'ip6', 'flannel-ipv6'], { check: true });
        await waitFor(async () => (await h0.exec(['nft', 'list', 'table', 'ip6', 'flannel-ipv6'])).code === 0, 15_000, 'table reinstalled', 250);
        await c!.daemons[0]!.stop('SIGTERM');
        for (const [family, table] of [['ip6', 'flannel-ipv6'], ['ip', 'flannel-ipv4']]) {
          assert.notEqual((await h0.exec(['nft', 'list', 'table', family!, table!])).code, 0, `${family} ${table} removed on SIGTERM`);
        }
      } else {
        const nat = await show(h0, ['ip6tables', '-t', 'nat', '-S', 'POSTROUTING']);
        const sn = `${net6(c!.pod6[0]!)}/64`;
        // flannel's MasqIP6Rules, in order.
        const want = [
          '-A POSTROUTING -s fd00:64::/56 -d fd00:64::/56 -m comment --comment "flanneld masq" -j RETURN',
          '-A POSTROUTING -s fd00:64::/56 ! -d ff00::/8 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
          `-A POSTROUTING ! -s fd00:64::/56 -d ${sn} -m comment --comment "flanneld masq" -j RETURN`,
          '-A POSTROUTING ! -s fd00:64::/56 -d fd00:64::/56 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully',
        ];
        assert.deepEqual(nat.split('\n').filter((l) => l.includes('flanneld masq')), want);
        assert.match(await show(h0, ['ip6tables', '-S', 'FORWARD']), /-A FORWARD -d fd00:64::\/56 -m comment --comment "flanneld forward" -j ACCEPT/);
        await c!.daemons[0]!.stop('SIGTERM');
        assert.doesNotMatch(await show(h0, ['ip6tables', '-t', 'nat', '-S', 'POSTROUTING']), /flanneld masq/, 'removed on SIGTERM');
      }
    });
  });
}
