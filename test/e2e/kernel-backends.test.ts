/**
 * The kernel backends end to end: hosts are network namespaces on a bridge,
 * etcd runs in the bridge's namespace, each host runs bin/flanneld and puts
 * its FLANNEL_SUBNET on a cni0 bridge. vxlan: three hosts, ping matrix and
 * iperf3 over flannel.1, a removed lease takes its FDB, neighbour and route
 * with it, restarts (SIGTERM, SIGKILL) reconcile without duplicates or a
 * gap in a running ping, a route deleted by hand comes back, bad options and
 * bad BackendData are refused clearly. host-gw: hosts on one link.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHosts, isListening, run, waitFor, type HostSet, type TestHost } from '../helpers/netns.js';
import { startDaemon, FLANNELCTL, type DaemonProcess } from '../helpers/daemon.js';
import { startEtcd, type TestEtcd } from '../helpers/etcd.js';
import { attachPodBridge } from '../helpers/pod-bridge.js';
import { peerAddressSeen } from '../helpers/peer-address.js';
import { parseEnv } from '../../src/subnet/subnet-env.js';

const P = '/coreos.com/network';

interface KCluster {
  set: HostSet;
  etcd: TestEtcd;
  dir: string;
  daemons: DaemonProcess[];
  pod: string[];
}

async function ctl(c: KCluster, args: string[]) {
  return run('ip', ['netns', 'exec', c.set.switchNs!, process.execPath, FLANNELCTL, `--etcd-endpoints=${c.etcd.endpoint}`, ...args], { timeoutMs: 20_000 });
}

function startHost(c: KCluster, i: number, extra: string[] = []): DaemonProcess {
  const h = c.set.hosts[i]!;
  const d = startDaemon([`--etcd-endpoints=${c.etcd.endpoint}`, `--iface=${h.iface}`, `--subnet-file=${join(c.dir, `h${i}.env`)}`, ...extra], { name: `h${i}`, prefix: ['ip', 'netns', 'exec', h.ns] });
  c.daemons[i] = d;
  return d;
}

async function cluster(n: number, prefix: string, config: string): Promise<KCluster> {
  const set = await createHosts(n, { prefix, topology: 'bridge' });
  await run('ip', ['-n', set.switchNs!, 'addr', 'add', '192.0.2.254/24', 'dev', 'br0'], { check: true });
  const etcd = await startEtcd({ netns: set.switchNs!, host: '192.0.2.254' });
  const c: KCluster = { set, etcd, dir: await mkdtemp(join(tmpdir(), `fts-${prefix}-`)), daemons: [], pod: [] };
  const put = await ctl(c, ['put', `${P}/config`, config]);
  assert.equal(put.code, 0, put.stderr);
  return c;
}

/** Start every host's daemon (`start` picks its flags), then give each its pod bridge. */
async function bringUp(c: KCluster, start: (i: number) => DaemonProcess = (i) => startHost(c, i)): Promise<void> {
  const ds = c.set.hosts.map((_, i) => start(i));
  await Promise.all(ds.map((d) => d.waitForLine(/running/, 20_000)));
  for (const [i, h] of c.set.hosts.entries()) {
    const env = parseEnv(await readFile(join(c.dir, `h${i}.env`), 'utf8'));
    await attachPodBridge(h, env);
    c.pod[i] = env.FLANNEL_SUBNET!.split('/')[0]!;
  }
}

async function teardown(c: KCluster | undefined): Promise<void> {
  if (!c) return;
  await Promise.all(c.daemons.map((d) => d?.stop('SIGKILL')));
  await c.etcd.cleanup();
  await c.set.destroy();
  await rm(c.dir, { recursive: true, force: true });
}

const ping = (c: KCluster, from: number, to: number) => c.set.hosts[from]!.exec(['ping', '-c', '1', '-W', '1', '-I', c.pod[from]!, c.pod[to]!], { timeoutMs: 5000 });
async function pingsEventually(c: KCluster, from: number, to: number): Promise<void> {
  await waitFor(async () => (await ping(c, from, to)).code === 0, 15_000, `ping h${from} -> h${to}`, 200);
}
async function pingMatrix(c: KCluster): Promise<void> {
  for (let i = 0; i < c.set.hosts.length; i++) for (let j = 0; j < c.set.hosts.length; j++) if (i !== j) await pingsEventually(c, i, j);
}
const net = (pod: string) => pod.replace(/\.1$/, '.0');
const show = async (h: TestHost, args: string[]) => (await h.exec(args, { check: true })).stdout;

describe('vxlan backend, three hosts on a real etcd', { timeout: 180_000 }, () => {
  let c: KCluster;
  before(async () => {
    c = await cluster(3, 'ftskv', '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}');
    await bringUp(c);
  });
  after(() => teardown(c));

  test('flannel.1 as flannel makes it, and the lease carries VNI and VtepMAC', async () => {
    const h = c.set.hosts[0]!;
    const link = (JSON.parse(await show(h, ['ip', '-d', '-json', 'link', 'show', 'flannel.1'])) as { address: string; mtu: number; linkinfo: { info_kind: string; info_data: { id: number; local: string; learning: boolean } } }[])[0]!;
    assert.equal(link.linkinfo.info_kind, 'vxlan');
    assert.equal(link.linkinfo.info_data.id, 1);
    assert.equal(link.linkinfo.info_data.local, h.ip);
    assert.equal(link.linkinfo.info_data.learning, false);
    assert.equal(link.mtu, 1450);
    assert.match(await show(h, ['ip', '-4', '-o', 'addr', 'show', 'dev', 'flannel.1']), new RegExp(`inet ${net(c.pod[0]!).replace(/\./g, '\\.')}/32`));
    const env = parseEnv(await readFile(join(c.dir, 'h0.env'), 'utf8'));
    assert.equal(env.FLANNEL_MTU, '1450');
    const lease = await ctl(c, ['get', `${P}/subnets/${net(c.pod[0]!)}-24`]);
    assert.equal(lease.stdout.trim(), `{"PublicIP":"${h.ip}","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"${link.address}"}}`);
  });

  test('every host reaches every other, and iperf3 runs over flannel.1', async () => {
    await pingMatrix(c);
    const srv = c.set.hosts[1]!.spawn(['iperf3', '-s', '-1', '-B', c.pod[1]!], { stdio: 'ignore' });
    await waitFor(() => isListening(c.set.hosts[1]!, 5201), 5000, 'iperf3 server');
    const r = await c.set.hosts[0]!.exec(['iperf3', '-c', c.pod[1]!, '-B', c.pod[0]!, '-t', '2', '-J'], { timeoutMs: 20_000 });
    srv.kill();
    assert.equal(r.code, 0, r.stderr);
    const bps = (JSON.parse(r.stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second;
    assert.ok(bps > 100e6, `${bps} bit/s`);
  });

  test('per peer: one FDB entry, one permanent neighbour entry, one onlink route', async () => {
    const h = c.set.hosts[0]!;
    const routes = await show(h, ['ip', '-4', 'route', 'show', 'dev', 'flannel.1']);
    for (const j of [1, 2]) assert.match(routes, new RegExp(`^${net(c.pod[j]!).replace(/\./g, '\\.')}/24 via ${net(c.pod[j]!).replace(/\./g, '\\.')} onlink`, 'm'));
    assert.equal(routes.trim().split('\n').length, 2, routes);
    const neigh = await show(h, ['ip', '-4', 'neigh', 'show', 'dev', 'flannel.1', 'nud', 'permanent']);
    assert.equal(neigh.trim().split('\n').length, 2, neigh);
    const fdb = await show(h, ['bridge', 'fdb', 'show', 'dev', 'flannel.1']);
    for (const j of [1, 2]) assert.match(fdb, new RegExp(`dst ${c.set.hosts[j]!.ip.replace(/\./g, '\\.')} self permanent`));
  });

  test('a route deleted by hand comes back', async () => {
    const h = c.set.hosts[0]!;
    await h.exec(['ip', 'route', 'del', `${net(c.pod[1]!)}/24`], { check: true });
    await waitFor(async () => (await show(h, ['ip', '-4', 'route', 'show', 'dev', 'flannel.1'])).includes(`${net(c.pod[1]!)}/24`), 20_000, 'route restored', 250);
    await pingsEventually(c, 0, 1);
  });

  test('restarts (SIGTERM, then SIGKILL) reconcile: no duplicate entries, a running ping loses at most a second', async () => {
    const h = c.set.hosts[0]!;
    for (const sig of ['SIGTERM', 'SIGKILL'] as const) {
      const pinger = h.exec(['ping', '-c', '40', '-i', '0.1', '-W', '1', '-I', c.pod[0]!, c.pod[1]!], { timeoutMs: 30_000 });
      await new Promise((r) => setTimeout(r, 500));
      await c.daemons[0]!.stop(sig);
      const d = startHost(c, 0);
      await d.waitForLine(/running/, 20_000);
      const out = (await pinger).stdout;
      const received = Number(/(\d+) received/.exec(out)?.[1]);
      assert.ok(received >= 30, `${sig}: ${received}/40 replies (at most ~1 s lost)\n${out}`);
      assert.ok(!d.lines.some((l) => /kernel state updated/.test(l)), `${sig}: the restart changed nothing: ${d.lines.filter((l) => /kernel state/.test(l)).join('\n')}`);
      assert.equal((await show(h, ['ip', '-4', 'route', 'show', 'dev', 'flannel.1'])).trim().split('\n').length, 2);
      assert.equal((await show(h, ['ip', '-4', 'neigh', 'show', 'dev', 'flannel.1', 'nud', 'permanent'])).trim().split('\n').length, 2);
    }
  });

  test('a lease with unusable BackendData is skipped with one log line; the others are still served', async () => {
    await ctl(c, ['put', `${P}/subnets/10.5.250.0-24`, '{"PublicIP":"192.0.2.77","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"not-a-mac"}}']);
    await ctl(c, ['put', `${P}/subnets/10.5.251.0-24`, '{"PublicIP":"192.0.2.78","PublicIPv6":null,"BackendType":"udp"}']);
    const d = c.daemons[1]!;
    await d.waitForLine(/skipping vxlan lease subnet=10\.5\.250\.0\/24/, 10_000);
    await d.waitForLine(/ignoring lease of another backend type .*10\.5\.251\.0\/24/, 10_000);
    await pingsEventually(c, 1, 2);
    await ctl(c, ['del', `${P}/subnets/10.5.250.0-24`]);
    await ctl(c, ['del', `${P}/subnets/10.5.251.0-24`]);
  });

  test('--dry-run prints what would change and changes nothing', async () => {
    const h = c.set.hosts[0]!;
    await c.daemons[0]!.stop('SIGTERM');
    await h.exec(['ip', 'route', 'del', `${net(c.pod[1]!)}/24`], { check: true });
    const d = startHost(c, 0, ['--dry-run']);
    assert.equal(await d.exited, 0, d.lines.join('\n'));
    const printed = d.lines.filter((l) => /^(ip|bridge) /.test(l));
    assert.ok(printed.includes(`ip route replace ${net(c.pod[1]!)}/24 via ${net(c.pod[1]!)} dev flannel.1 onlink`), printed.join('\n'));
    assert.ok(!printed.some((l) => /fdb|neigh/.test(l)), `only the missing route: ${printed.join('\n')}`);
    assert.ok(!(await show(h, ['ip', '-4', 'route', 'show', 'dev', 'flannel.1'])).includes(`${net(c.pod[1]!)}/24`), 'nothing changed');
    const back = startHost(c, 0);
    await back.waitForLine(/running/, 20_000);
    await pingsEventually(c, 0, 1);
  });

  test('a lease removed: its FDB entry, neighbour entry and route are gone on the peers', async () => {
    const gone = 2;
    await c.daemons[gone]!.stop('SIGTERM');
    await ctl(c, ['del', `${P}/subnets/${net(c.pod[gone]!)}-24`]);
    const h = c.set.hosts[0]!;
    await waitFor(async () => !(await show(h, ['ip', '-4', 'route', 'show', 'dev', 'flannel.1'])).includes(net(c.pod[gone]!)), 10_000, 'route removed', 200);
    assert.ok(!(await show(h, ['ip', '-4', 'neigh', 'show', 'dev', 'flannel.1'])).includes(`${net(c.pod[gone]!)} `));
    assert.ok(!(await show(h, ['bridge', 'fdb', 'show', 'dev', 'flannel.1'])).includes(`dst ${c.set.hosts[gone]!.ip} `));
    await pingsEventually(c, 0, 1);
  });
});

describe('vxlan DirectRouting: two hosts on one link, a third behind a router', { timeout: 90_000 }, () => {
  let c: KCluster;
  const R = 'ftskdr-r';
  const H3 = 'ftskdr-h3';
  const sh = (args: string[]) => run('ip', args, { check: true });
  before(async () => {
    c = await cluster(2, 'ftskd', '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}');
    const sw = c.set.switchNs!;
    for (const ns of [R, H3]) await run('ip', ['netns', 'del', ns]);
    await sh(['netns', 'add', R]);
    await sh(['netns', 'add', H3]);
    // The router: one leg on the hosts' bridge (192.0.2.253), one on 198.18.1.0/24 towards the third host.
    await sh(['-n', sw, 'link', 'add', 'rleg', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', R]);
    await sh(['-n', sw, 'link', 'set', 'rleg', 'master', 'br0', 'up']);
    await sh(['-n', R, 'addr', 'add', '192.0.2.253/24', 'dev', 'eth0']);
    await sh(['-n', R, 'link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', H3]);
    await sh(['-n', R, 'addr', 'add', '198.18.1.1/24', 'dev', 'eth1']);
    await sh(['-n', H3, 'addr', 'add', '198.18.1.2/24', 'dev', 'eth0']);
    for (const [ns, dev] of [[R, 'eth0'], [R, 'eth1'], [R, 'lo'], [H3, 'eth0'], [H3, 'lo']] as const) await sh(['-n', ns, 'link', 'set', dev, 'up']);
    await run('ip', ['netns', 'exec', R, 'sysctl', '-qw', 'net.ipv4.ip_forward=1'], { check: true });
    await sh(['-n', H3, 'route', 'add', 'default', 'via', '198.18.1.1']);
    for (const ns of [sw, ...c.set.hosts.map((h) => h.ns)]) await sh(['-n', ns, 'route', 'add', '198.18.1.0/24', 'via', '192.0.2.253']);
    const ds = [startHost(c, 0), startHost(c, 1)];
    const d3 = startDaemon([`--etcd-endpoints=${c.etcd.endpoint}`, '--iface=eth0', `--subnet-file=${join(c.dir, 'h2.env')}`], { name: 'h2', prefix: ['ip', 'netns', 'exec', H3] });
    c.daemons[2] = d3;
    await Promise.all([...ds, d3].map((d) => d.waitForLine(/running/, 20_000)));
    const h3: TestHost = { ns: H3, iface: 'eth0', addr: '198.18.1.2/24', ip: '198.18.1.2', exec: (args, o) => run('ip', ['netns', 'exec', H3, ...args], o), spawn: c.set.hosts[0]!.spawn };
    c.set.hosts.push(h3);
    for (const [i, h] of c.set.hosts.entries()) {
      const env = parseEnv(await readFile(join(c.dir, `h${i}.env`), 'utf8'));
      await attachPodBridge(h, env);
      c.pod[i] = env.FLANNEL_SUBNET!.split('/')[0]!;
    }
  });
  after(async () => {
    c?.set.hosts.pop();
    await teardown(c);
    for (const ns of [R, H3]) await run('ip', ['netns', 'del', ns]);
  });

  test('the peer on our link gets a plain route via its PublicIP, the one behind the router a vxlan route; all reach each other', async () => {
    await pingMatrix(c);
    const h0 = c.set.hosts[0]!;
    const routes = await show(h0, ['ip', '-4', 'route', 'show']);
    assert.match(routes, new RegExp(`^${net(c.pod[1]!).replace(/\./g, '\\.')}/24 via 192\\.0\\.2\\.2 dev eth0`, 'm'), routes);
    assert.match(routes, new RegExp(`^${net(c.pod[2]!).replace(/\./g, '\\.')}/24 via ${net(c.pod[2]!).replace(/\./g, '\\.')} dev flannel\\.1 onlink`, 'm'), routes);
    const fdb = await show(h0, ['bridge', 'fdb', 'show', 'dev', 'flannel.1']);
    assert.match(fdb, /dst 198\.18\.1\.2 self permanent/);
    assert.ok(!fdb.includes('dst 192.0.2.2 '), 'no vxlan entry for the directly routed peer');
  });
});

describe('vxlan options are checked before anything is touched', () => {
  test('VNI 0, a VNI above 16777215, a port out of range, a string VNI: one clear error, exit 1', async () => {
    const c = await cluster(1, 'ftskb', '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}');
    try {
      for (const [backend, re] of [
        ['{"Type":"vxlan","VNI":0}', /VNI must be an integer in 1\.\.16777215, got 0/],
        ['{"Type":"vxlan","VNI":16777216}', /VNI must be an integer in 1\.\.16777215, got 16777216/],
        ['{"Type":"vxlan","Port":70000}', /Port must be an integer in 0\.\.65535/],
        ['{"Type":"vxlan","VNI":"1"}', /VNI must be an integer in 1\.\.16777215, got "1"/],
        ['{"Type":"vxlan","GBP":"yes"}', /GBP must be true or false/],
      ] as const) {
        await ctl(c, ['put', `${P}/config`, `{"Network":"10.5.0.0/16","Backend":${backend}}`]);
        const d = startHost(c, 0);
        assert.equal(await d.exited, 1, backend);
        assert.ok(d.lines.some((l) => re.test(l)), `${backend}: ${d.lines.join('\n')}`);
        const links = await show(c.set.hosts[0]!, ['ip', '-o', 'link', 'show']);
        assert.ok(!/flannel\./.test(links), 'no device created');
      }
    } finally {
      await teardown(c);
    }
  });
});

describe('an existing flannel.1 with other parameters', () => {
  test('is recreated as flannel does (here: another UDP port), and the daemon runs', async () => {
    const c = await cluster(1, 'ftskr', '{"Network":"10.5.0.0/16","Backend":{"Type":"vxlan"}}');
    try {
      const h = c.set.hosts[0]!;
      await h.exec(['ip', 'link', 'add', 'flannel.1', 'type', 'vxlan', 'id', '1', 'local', h.ip, 'dev', 'eth0', 'dstport', '4789', 'nolearning'], { check: true });
      const d = startHost(c, 0);
      await d.waitForLine(/running/, 20_000);
      assert.ok(d.lines.some((l) => /vxlan device exists with other parameters, recreating it .*port 4789 instead of 8472/.test(l)), d.lines.join('\n'));
      const link = (JSON.parse(await show(h, ['ip', '-d', '-json', 'link', 'show', 'flannel.1'])) as { linkinfo: { info_data: { port: number } } }[])[0]!;
      assert.equal(link.linkinfo.info_data.port, 8472);
    } finally {
      await teardown(c);
    }
  });
});

describe('ipip on a kernel without it', () => {
  test('one clear error, exit 1, nothing half-configured (no lease, no device, no route)', async () => {
    const c = await cluster(1, 'ftski', '{"Network":"10.5.0.0/16","Backend":{"Type":"ipip"}}');
    try {
      const d = startHost(c, 0);
      assert.equal(await d.exited, 1);
      assert.ok(d.lines.some((l) => /^ERROR .*ipip backend: this kernel has no IP-in-IP tunnels .*modprobe ipip/.test(l)), d.lines.join('\n'));
      assert.equal((await ctl(c, ['get', '--prefix', `${P}/subnets/`])).stdout.trim(), '', 'no lease taken');
      assert.ok(!/flannel\.ipip/.test(await show(c.set.hosts[0]!, ['ip', '-o', 'link', 'show'])));
    } finally {
      await teardown(c);
    }
  });
});

describe('host-gw backend, hosts on one link', { timeout: 60_000 }, () => {
  let c: KCluster;
  before(async () => {
    c = await cluster(3, 'ftskh', '{"Network":"10.5.0.0/16","Backend":{"Type":"host-gw"}}');
    await bringUp(c);
  });
  after(() => teardown(c));

  test('one route per peer via its PublicIP; every host reaches every other', async () => {
    await pingMatrix(c);
    const h = c.set.hosts[0]!;
    const routes = await show(h, ['ip', '-4', 'route', 'show']);
    for (const j of [1, 2]) assert.match(routes, new RegExp(`^${net(c.pod[j]!).replace(/\./g, '\\.')}/24 via ${c.set.hosts[j]!.ip.replace(/\./g, '\\.')} dev eth0`, 'm'));
    assert.equal(parseEnv(await readFile(join(c.dir, 'h0.env'), 'utf8')).FLANNEL_MTU, '1500');
  });

  test('a peer that is not on our link gets one clear log line and no route', async () => {
    await ctl(c, ['put', `${P}/subnets/10.5.252.0-24`, '{"PublicIP":"198.18.5.5","PublicIPv6":null,"BackendType":"host-gw"}']);
    await c.daemons[0]!.waitForLine(/peer is not on our link: host-gw cannot reach it, no route subnet=10\.5\.252\.0\/24/, 10_000);
    assert.ok(!(await show(c.set.hosts[0]!, ['ip', '-4', 'route', 'show'])).includes('10.5.252.0'));
  });
});

for (const nft of [false, true]) {
  describe(`--ip-masq with ${nft ? 'nftables (EnableNFTables)' : 'iptables'}: real packets`, { timeout: 60_000 }, () => {
    let c: KCluster;
    before(async () => {
      c = await cluster(2, nft ? 'ftskn' : 'ftskt', JSON.stringify({ Network: '10.5.0.0/16', EnableNFTables: nft, Backend: { Type: 'host-gw' } }));
      await bringUp(c, (i) => startHost(c, i, ['--ip-masq']));
      await pingsEventually(c, 0, 1);
    });
    after(() => teardown(c));

    test('a pod talking outside Network leaves masqueraded; between pod subnets the source is kept', async () => {
      const h0 = c.set.hosts[0]!;
      assert.equal(await peerAddressSeen(c.set.switchNs!, '192.0.2.254', h0, c.pod[0]!), h0.ip, 'masqueraded to the host address');
      assert.equal(await peerAddressSeen(c.set.hosts[1]!.ns, c.pod[1]!, h0, c.pod[0]!), c.pod[0]!, 'pod to pod keeps its source');
      if (nft) {
        const t = await show(h0, ['nft', 'list', 'table', 'ip', 'flannel-ipv4']);
        assert.match(t, /masquerade fully-random/);
        // Deleted by someone: reinstalled within a resync interval.
        await h0.exec(['nft', 'delete', 'table', 'ip', 'flannel-ipv4'], { check: true });
        await waitFor(async () => (await h0.exec(['nft', 'list', 'table', 'ip', 'flannel-ipv4'])).code === 0, 15_000, 'table reinstalled', 250);
        // Removed on a clean stop.
        await c.daemons[0]!.stop('SIGTERM');
        assert.notEqual((await h0.exec(['nft', 'list', 'table', 'ip', 'flannel-ipv4'])).code, 0, 'table removed on SIGTERM');
      } else {
        assert.match(await show(h0, ['iptables', '-t', 'nat', '-S', 'POSTROUTING']), /flanneld masq/);
      }
    });
  });
}

/**
 * Hostile lease text (issue 24 item 2): any host that may write the store
 * can write a lease whose PublicIP or BackendData carries a vertical tab, a
 * newline, a trailing space or an option-like tail. Before, the text reached
 * `ip -batch`/`bridge -batch` as it was, iproute2 exited on the bad line and
 * no later line of the round was applied, on every host and every round.
 * Now such leases are refused and counted, and every legitimate peer is
 * fully programmed.
 */
const HOSTILE_IPS = ['192.0.2.7\u000b', '192.0.2.8\n', '192.0.2.9 ', '192.0.2.10 dev lo'];
const metricsOf = async (h: TestHost, port: number) => (await h.exec([process.execPath, '-e', `fetch('http://127.0.0.1:${port}/metrics').then(r=>r.text()).then(t=>process.stdout.write(t))`], { timeoutMs: 5000 })).stdout;
const metricValue = (text: string, re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);

for (const backend of ['host-gw', 'vxlan'] as const) {
  describe(`${backend}: hostile leases in the store`, { timeout: 120_000 }, () => {
    let c: KCluster;
    const hostileKeys: string[] = [];
    before(async () => {
      c = await cluster(3, backend === 'vxlan' ? 'ftshv' : 'ftshg', `{"Network":"10.5.0.0/16","Backend":{"Type":"${backend}"}}`);
      // Written before the daemons start, so the first round of each holds them.
      for (const [i, ip] of HOSTILE_IPS.entries()) {
        const key = `${P}/subnets/10.5.${240 + i}.0-24`;
        hostileKeys.push(key);
        const data = backend === 'vxlan' ? { BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: `0a:00:00:00:00:0${i}` } } : { BackendType: 'host-gw' };
        assert.equal((await ctl(c, ['put', key, JSON.stringify({ PublicIP: ip, PublicIPv6: null, ...data })])).code, 0);
      }
      if (backend === 'vxlan') {
        // Canonical PublicIP, hostile VtepMAC: refused by the backend, not the codec.
        for (const [i, mac] of ['0a:00:00:00:00:07\u000b', '0a:00:00:00:00:08 dev lo'].entries()) {
          const key = `${P}/subnets/10.5.${244 + i}.0-24`;
          // (A PublicIP no host has: a host adopts a lease with its own PublicIP as its lease, as flannel does.)
          await ctl(c, ['put', key, JSON.stringify({ PublicIP: `192.0.2.${20 + i}`, PublicIPv6: null, BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: mac } })]);
        }
      }
      await bringUp(c, (i) => startHost(c, i, i === 0 ? ['--healthz-ip=127.0.0.1', '--healthz-port=8474'] : []));
    });
    after(() => teardown(c));

    test('every legitimate peer is fully programmed on every host; the hostile leases are refused and counted', async () => {
      await pingMatrix(c);
      for (const [i, h] of c.set.hosts.entries()) {
        const routes = await show(h, ['ip', '-4', 'route', 'show']);
        for (const [j, peer] of c.set.hosts.entries()) {
          if (i === j) continue;
          const dst = `${net(c.pod[j]!)}/24`;
          if (backend === 'host-gw') assert.match(routes, new RegExp(`^${dst.replace(/\./g, '\\.')} via ${peer.ip.replace(/\./g, '\\.')} dev eth0`, 'm'), `h${i}:\n${routes}`);
          else assert.match(routes, new RegExp(`^${dst.replace(/\./g, '\\.')} via ${net(c.pod[j]!).replace(/\./g, '\\.')} dev flannel\\.1 onlink`, 'm'), `h${i}:\n${routes}`);
        }
        assert.ok(!/10\.5\.24\d\.0/.test(routes), `no route for a hostile lease on h${i}:\n${routes}`);
        if (backend === 'vxlan') {
          const fdb = await show(h, ['bridge', 'fdb', 'show', 'dev', 'flannel.1']);
          assert.equal((fdb.match(/ dst 192\.0\.2\.\d+ self permanent/g) ?? []).length, 2, `h${i} fdb:\n${fdb}`);
        }
      }
      const m = await metricsOf(c.set.hosts[0]!, 8474);
      assert.equal(metricValue(m, /flannel_subnet_leases_rejected_total\{reason="malformed_public_ip"\} (\d+)/), HOSTILE_IPS.length, m);
      if (backend === 'vxlan') assert.equal(metricValue(m, /^flannel_vxlan_leases_unusable (\d+)$/m), 2, m);
      for (const k of hostileKeys.slice(0, 2)) assert.ok(c.daemons[0]!.lines.some((l) => l.includes('skipping malformed lease') && l.includes(k.slice(k.indexOf('subnets/')))), `${k} logged`);
      assert.ok(!c.daemons.some((d) => d.lines.some((l) => /kernel state change failed/.test(l))), 'iproute2 refused no line');
    });

    test('a hostile lease written while running changes nothing; a legitimate one after it is programmed', async () => {
      await ctl(c, ['put', `${P}/subnets/10.5.248.0-24`, JSON.stringify({ PublicIP: '192.0.2.11\n', PublicIPv6: null, BackendType: backend })]);
      const legit = backend === 'vxlan' ? { BackendType: 'vxlan', BackendData: { VNI: 1, VtepMAC: '0a:00:00:00:00:fe' } } : { BackendType: 'host-gw' };
      await ctl(c, ['put', `${P}/subnets/10.5.249.0-24`, JSON.stringify({ PublicIP: '192.0.2.30', PublicIPv6: null, ...legit })]);
      await waitFor(async () => (await show(c.set.hosts[0]!, ['ip', '-4', 'route', 'show'])).includes('10.5.249.0/24'), 10_000, 'the legitimate lease routed', 200);
      const m = await metricsOf(c.set.hosts[0]!, 8474);
      assert.equal(metricValue(m, /flannel_subnet_leases_rejected_total\{reason="malformed_public_ip"\} (\d+)/), HOSTILE_IPS.length + 1);
      if (backend === 'vxlan') assert.match(await show(c.set.hosts[0]!, ['bridge', 'fdb', 'show', 'dev', 'flannel.1']), /0a:00:00:00:00:fe dst 192\.0\.2\.30 self permanent/);
      await pingMatrix(c);
    });
  });
}
