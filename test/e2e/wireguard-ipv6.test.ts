/**
 * The wireguard backend's userspace path on a dual-stack network (this
 * kernel has no WireGuard): Mode separate as flannel sets it up, flannel-wg
 * for IPv4 pods over IPv4 endpoints and flannel-wg-v6 for IPv6 pods over
 * IPv6 endpoints (ListenPortV6), both with one key. Hosts are network
 * namespaces on a bridge with addresses from 192.0.2.0/24 and
 * 2001:db8::/64. Also interop over IPv6 with Debian's wireguard-go.
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
import { parseEnv } from '../../src/subnet/subnet-env.js';
import { LocalStore } from '../../src/subnet/local-store.js';

const P = '/coreos.com/network';
const CONFIG = { Network: '10.63.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:63::/56', Backend: { Type: 'wireguard' } };

interface Cluster {
  set: HostSet;
  dir: string;
  store: LocalStore;
  daemons: DaemonProcess[];
  pod: string[];
  pod6: string[];
  ip6: string[];
}

const keyFile = (c: Cluster, i: number) => join(c.dir, `h${i}.wgkey`);
const sockDir = (c: Cluster, i: number) => join(c.dir, `h${i}-wg`);
const wgOn = (c: Cluster, i: number, args: string[]) =>
  c.set.hosts[i]!.exec(['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', 'mkdir -p /run/wireguard && mount --bind "$0" /run/wireguard && exec wg "$@"', sockDir(c, i), ...args], { timeoutMs: 10_000 });
const metrics = async (h: TestHost) => (await h.exec([process.execPath, '-e', "fetch('http://127.0.0.1:8473/metrics').then(r=>r.text()).then(t=>process.stdout.write(t))"], { timeoutMs: 5000 })).stdout;
const metric = (text: string, re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);

async function cluster(n: number, prefix: string, config: object = CONFIG): Promise<Cluster> {
  const dir = await mkdtemp(join(tmpdir(), `fts-${prefix}-`));
  const store = new LocalStore({ dir: join(dir, 'store') });
  await store.put(`${P}/config`, JSON.stringify(config));
  const set = await createHosts(n, { prefix, topology: 'bridge' });
  const ip6: string[] = [];
  for (const [i, h] of set.hosts.entries()) {
    ip6[i] = `2001:db8::${i + 1}`;
    await run('ip', ['-n', h.ns, '-6', 'addr', 'add', `${ip6[i]}/64`, 'dev', h.iface, 'nodad'], { check: true });
  }
  return { set, dir, store, daemons: [], pod: [], pod6: [], ip6 };
}

function startHost(c: Cluster, i: number, extra: string[] = []): DaemonProcess {
  const h = c.set.hosts[i]!;
  const d = startDaemon([`--local-store=${join(c.dir, 'store')}`, `--iface=${h.iface}`, `--subnet-file=${join(c.dir, `h${i}.env`)}`, '--healthz-ip=127.0.0.1', '--healthz-port=8473', ...extra], {
    name: `h${i}`,
    prefix: ['ip', 'netns', 'exec', h.ns],
    env: { WIREGUARD_KEY_FILE: keyFile(c, i), FLANNEL_WIREGUARD_SOCKET_DIR: sockDir(c, i) },
  });
  c.daemons[i] = d;
  return d;
}

async function bringUp(c: Cluster, hosts = c.set.hosts.map((_, i) => i), extra: (i: number) => string[] = () => []): Promise<void> {
  const ds = hosts.map((i) => startHost(c, i, extra(i)));
  await Promise.all(ds.map((d) => d.waitForLine(/\[flanneld\] running$/, 30_000)));
  for (const i of hosts) {
    const env = parseEnv(await readFile(join(c.dir, `h${i}.env`), 'utf8'));
    const h = c.set.hosts[i]!;
    if (!c.pod[i]) await attachPodBridge(h, env);
    c.pod[i] = env.FLANNEL_SUBNET!.split('/')[0]!;
    c.pod6[i] = env.FLANNEL_IPV6_SUBNET!.split('/')[0]!;
  }
}

async function teardown(c: Cluster | undefined): Promise<void> {
  if (!c) return;
  await Promise.all(c.daemons.map((d) => d?.stop('SIGKILL')));
  await c.set.destroy();
  await rm(c.dir, { recursive: true, force: true });
}

const ping = (c: Cluster, from: number, to: number, v6: boolean) =>
  c.set.hosts[from]!.exec(['ping', v6 ? '-6' : '-4', '-c', '1', '-W', '1', '-I', (v6 ? c.pod6 : c.pod)[from]!, (v6 ? c.pod6 : c.pod)[to]!], { timeoutMs: 5000 });
const pingsEventually = (c: Cluster, from: number, to: number, v6: boolean, ms = 20_000) =>
  waitFor(async () => (await ping(c, from, to, v6)).code === 0, ms, `ping${v6 ? ' -6' : ''} h${from} -> h${to}`, 200);

async function leaseKeyOf(c: Cluster, i: number): Promise<string> {
  const all = (await c.store.list(`${P}/subnets/`)).entries;
  const want = `${c.pod[i]!.replace(/\.1$/, '.0')}-24&`;
  const e = all.find((x) => x.key.includes(`/${want}`));
  assert.ok(e, `lease of h${i} among ${all.map((x) => x.key).join(', ')}`);
  return e.key;
}

describe('wireguard backend (userspace), dual stack in Mode separate: flannel-wg and flannel-wg-v6', { timeout: 240_000 }, () => {
  let c: Cluster | undefined;
  before(async () => {
    c = await cluster(3, 'ftw6');
  });
  after(() => teardown(c));

  test('lease carries PublicIPv6 and the key in BackendV6Data; flannel-wg-v6 gets its /128 and route; ping matrix over both families', async () => {
    await bringUp(c!);
    const key = await leaseKeyOf(c!, 0);
    const lease = JSON.parse((await c!.store.get(key))!.value);
    assert.equal(lease.PublicIPv6, '2001:db8::1');
    assert.equal(lease.BackendType, 'wireguard');
    assert.match(lease.BackendV6Data.PublicKey, /^[A-Za-z0-9+/]{43}=$/);
    assert.equal(lease.BackendV6Data.PublicKey, lease.BackendData.PublicKey, 'one key for both devices, as flannel');
    const h0 = c!.set.hosts[0]!;
    const addr = (await h0.exec(['ip', '-6', '-o', 'addr', 'show', 'dev', 'flannel-wg-v6', 'scope', 'global'], { check: true })).stdout;
    const own6 = c!.pod6[0]!.replace(/::1$/, '::');
    assert.match(addr, new RegExp(`inet6 ${own6}/128`));
    const route = (await h0.exec(['ip', '-6', 'route', 'show', 'dev', 'flannel-wg-v6'], { check: true })).stdout;
    assert.match(route, /^fd00:63::\/56 /m);
    // Every address, as a kernel WireGuard device listens (peers are told apart by key, not by address).
    assert.match((await h0.exec(['ss', '-uln'], { check: true })).stdout, /\[::\]:51821/);
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) if (i !== j) {
      await pingsEventually(c!, i, j, false);
      await pingsEventually(c!, i, j, true);
    }
    const m = await metrics(h0);
    assert.equal(metric(m, /^flannel_wireguard_sessions (\d+)$/m), 2);
    assert.equal(metric(m, /^flannel_wireguard_v6_sessions (\d+)$/m), 2);
    assert.ok(metric(m, /flannel_wireguard_v6_packets_total\{op="opened"\} (\d+)/) > 0);
    assert.ok(metric(m, /^flannel_wireguard_v6_delivered_packets_total (\d+)$/m) > 0 || /flannel_wireguard_v6_/.test(m));
    const show = await wgOn(c!, 0, ['show', 'flannel-wg-v6']);
    assert.equal(show.code, 0, show.stderr);
    assert.match(show.stdout, /listening port: 51821/);
    assert.match(show.stdout, /endpoint: \[2001:db8::2\]:51821/);
    assert.match(show.stdout, /endpoint: \[2001:db8::3\]:51821/);
    assert.match(show.stdout, new RegExp(`allowed ips: ${c!.pod6[1]!.replace(/::1$/, '::')}/64`));
    assert.match(show.stdout, /latest handshake: /);
  });

  test('iperf3 over IPv6 pods', async (t) => {
    const [h0, h1] = c!.set.hosts as [TestHost, TestHost];
    const fragments = async () => Number(/^Ip6FragCreates\s+(\d+)/m.exec((await h0.exec(['cat', '/proc/net/snmp6'])).stdout)?.[1] ?? NaN);
    const f0 = await fragments();
    const bps = await iperfRate(h0, c!.pod6[0]!, h1, c!.pod6[1]!, 3);
    t.diagnostic(`iperf3 -6 through flannel-wg-v6: ${(bps / 1e9).toFixed(2)} Gbit/s`);
    assert.ok(bps > 20e6, `iperf3 -6 ${bps} bit/s`);
    // The sender's kernel handed flannel-wg-v6 IPv6 TCP super-packets (TSO6), cut by us; the receiver glued them again.
    assert.ok(metric(await metrics(h0), /^flannel_wireguard_v6_tun_offload_super_packets_total (\d+)$/m) > 0, 'TSO6 super-packets read');
    assert.ok(metric(await metrics(h1), /^flannel_wireguard_v6_rx_super_packets_total (\d+)$/m) > 0, 'IPv6 super-packets written');
    // Full-size packets fit the underlay once sealed (padding stops at the MTU): no outer datagram is fragmented.
    assert.equal((await fragments()) - f0, 0, 'IPv6 fragments created on the sender');
  });

  test('wg set moves a flannel-wg-v6 peer\'s endpoint (and wg show prints it); a bad endpoint is refused', async () => {
    const show = async () => (await wgOn(c!, 0, ['show', 'flannel-wg-v6', 'endpoints'])).stdout;
    const line = (await show()).split('\n').find((l) => l.includes('[2001:db8::2]:51821'))!;
    const key = line.split('\t')[0]!;
    const set = await wgOn(c!, 0, ['set', 'flannel-wg-v6', 'peer', key, 'endpoint', '[2001:db8::77]:51821']);
    assert.equal(set.code, 0, set.stderr);
    assert.match(await show(), /\[2001:db8::77\]:51821/);
    const bad = await wgOn(c!, 0, ['set', 'flannel-wg-v6', 'peer', key, 'endpoint', '192.0.2.2:51821']);
    assert.notEqual(bad.code, 0, 'an IPv4 endpoint on the IPv6 device');
    // Back where the lease says (wg set lasts until the next lease event; here we set it back ourselves).
    assert.equal((await wgOn(c!, 0, ['set', 'flannel-wg-v6', 'peer', key, 'endpoint', '[2001:db8::2]:51821'])).code, 0);
    await pingsEventually(c!, 0, 1, true);
  });

  test('a lease removed: its IPv6 peer and route are gone on the others, the rest still flows', async () => {
    const key = await leaseKeyOf(c!, 2);
    await c!.daemons[2]!.stop('SIGKILL');
    await c!.store.delete(key);
    await c!.daemons[0]!.waitForLine(/wireguard peer removed.*flannel-wg-v6/, 15_000);
    const show = await wgOn(c!, 0, ['show', 'flannel-wg-v6', 'endpoints']);
    assert.doesNotMatch(show.stdout, /2001:db8::3/);
    assert.notEqual((await ping(c!, 0, 2, true)).code, 0);
    await pingsEventually(c!, 0, 1, true);
    await pingsEventually(c!, 1, 0, true);
  });

  test('a daemon restarted with the same key: IPv6 sessions re-established', async () => {
    await c!.daemons[1]!.stop('SIGTERM');
    await bringUp(c!, [1]);
    await pingsEventually(c!, 0, 1, true);
    await pingsEventually(c!, 1, 0, true);
  });
});

describe('wireguard backend (userspace) on an IPv6-only network: flannel-wg-v6 alone, and Mode ipv6 on flannel-wg', { timeout: 120_000 }, () => {
  let c: Cluster | undefined;
  const V6ONLY = { EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:64::/56' };
  before(async () => {
    c = await cluster(2, 'ftv6', { ...V6ONLY, Backend: { Type: 'wireguard' } });
  });
  after(() => teardown(c));

  for (const [label, backend, device, port] of [
    ['Mode separate', { Type: 'wireguard' }, 'flannel-wg-v6', 51821],
    ['Mode ipv6', { Type: 'wireguard', Mode: 'ipv6' }, 'flannel-wg', 51820],
  ] as const) {
    test(`${label}: pods reach each other over ${device} on [PublicIPv6]:${port}`, async () => {
      await Promise.all(c!.daemons.map((d) => d?.stop('SIGTERM')));
      await c!.store.put(`${P}/config`, JSON.stringify({ ...V6ONLY, Backend: backend }));
      // The pods keep their IPv6 subnets across the restart (the leases are reacquired).
      const ds = [0, 1].map((i) => startHost(c!, i));
      await Promise.all(ds.map((d) => d.waitForLine(/\[flanneld\] running$/, 30_000)));
      for (const i of [0, 1]) {
        const env = parseEnv(await readFile(join(c!.dir, `h${i}.env`), 'utf8'));
        assert.equal(env.FLANNEL_SUBNET, undefined, 'no IPv4 subnet');
        const h = c!.set.hosts[i]!;
        if (!c!.pod6[i]) await attachPodBridge(h, env);
        c!.pod6[i] = env.FLANNEL_IPV6_SUBNET!.split('/')[0]!;
      }
      await pingsEventually(c!, 0, 1, true);
      await pingsEventually(c!, 1, 0, true);
      const show = await wgOn(c!, 0, ['show', device, 'endpoints']);
      assert.equal(show.code, 0, show.stderr);
      assert.match(show.stdout, new RegExp(`\\[2001:db8::2\\]:${port}`));
      const other = device === 'flannel-wg' ? 'flannel-wg-v6' : 'flannel-wg';
      assert.notEqual((await c!.set.hosts[0]!.exec(['ip', 'link', 'show', 'dev', other])).code, 0, `no ${other}`);
    });
  }
});

/**
 * flannel's one-device Modes on a dual-stack network: flannel-wg carries
 * IPv4 and IPv6 pods, its peers at IPv4 endpoints (Mode ipv4), IPv6 ones
 * (Mode ipv6), or per peer (Mode auto: one socket for both families). For
 * auto, host 2 publishes a private PublicIP (10.99.0.3, a second address on
 * its link): hosts 0 and 1 reach each other over IPv4 (public on both
 * sides), reach host 2 over IPv6, and host 2 reaches them over IPv4
 * (theirs is public), as flannel's selectPublicEndpoint decides. Host 2
 * sends from 192.0.2.3 (its link's first address), and an authenticated
 * packet moves a peer's endpoint to its source (WireGuard's roaming): the
 * others may show host 2 there instead ("a|b" lists both).
 */
describe('wireguard backend (userspace), dual stack, one device for both families: Modes ipv4, ipv6, auto', { timeout: 240_000 }, () => {
  let c: Cluster | undefined;
  before(async () => {
    c = await cluster(3, 'ftwm', { ...CONFIG, Backend: { Type: 'wireguard', Mode: 'ipv4' } });
    const [h0, h1, h2] = c.set.hosts as [TestHost, TestHost, TestHost];
    await run('ip', ['-n', h2.ns, 'addr', 'add', '10.99.0.3/24', 'dev', h2.iface], { check: true });
    for (const h of [h0, h1]) await run('ip', ['-n', h.ns, 'route', 'add', '10.99.0.0/24', 'dev', h.iface], { check: true });
  });
  after(() => teardown(c));

  const endpointsOf = async (i: number) => (await wgOn(c!, i, ['show', 'flannel-wg', 'endpoints'])).stdout;

  for (const [mode, expect] of [
    ['ipv4', { 0: ['192.0.2.2:51820', '10.99.0.3:51820|192.0.2.3:51820'], 2: ['192.0.2.1:51820', '192.0.2.2:51820'] }],
    ['ipv6', { 0: ['[2001:db8::2]:51820', '[2001:db8::3]:51820'], 2: ['[2001:db8::1]:51820', '[2001:db8::2]:51820'] }],
    ['auto', { 0: ['192.0.2.2:51820', '[2001:db8::3]:51820|192.0.2.3:51820'], 2: ['192.0.2.1:51820|[2001:db8::1]:51820', '192.0.2.2:51820|[2001:db8::2]:51820'] }],
  ] as const) {
    test(`Mode ${mode}: ping matrix over both families through flannel-wg, peers at ${mode === 'auto' ? 'the endpoints flannel would pick' : `${mode} endpoints`}`, async () => {
      await Promise.all(c!.daemons.map((d) => d?.stop('SIGTERM')));
      await c!.store.put(`${P}/config`, JSON.stringify({ ...CONFIG, Backend: { Type: 'wireguard', Mode: mode } }));
      await bringUp(c!, [0, 1, 2], (i) => (i === 2 ? ['--public-ip=10.99.0.3'] : []));
      assert.notEqual((await c!.set.hosts[0]!.exec(['ip', 'link', 'show', 'dev', 'flannel-wg-v6'])).code, 0, 'no flannel-wg-v6');
      for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) if (i !== j) {
        await pingsEventually(c!, i, j, false);
        await pingsEventually(c!, i, j, true);
      }
      for (const [i, want] of Object.entries(expect)) {
        const shown = await endpointsOf(Number(i));
        for (const e of want) assert.ok((e as string).split('|').some((alt: string) => shown.includes(`\t${alt}\n`)), `h${i} has a peer at ${e}:\n${shown}`);
      }
      const m = await metrics(c!.set.hosts[0]!);
      assert.equal(metric(m, /^flannel_wireguard_sessions (\d+)$/m), 2);
    });
  }
});

/** wireguard-go on host 1 as a flannel-wg-v6 peer: its endpoint [2001:db8::2]:51821. */
describe('wireguard backend (userspace) flannel-wg-v6 next to wireguard-go over IPv6', { timeout: 180_000 }, () => {
  let c: Cluster | undefined;
  let wgGo: ReturnType<TestHost['spawn']> | undefined;
  const IFACE = `ftwg6${process.pid % 10000}`;
  const GO_ADDR6 = 'fd00:63:0:c8::1';

  async function startWireGuardGo(h: TestHost, priv: string, ourPublic: string, ourSubnet6: string): Promise<void> {
    wgGo = h.spawn(['wireguard-go', '-f', IFACE], { env: { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1' } });
    await waitFor(async () => (await h.exec(['ip', 'link', 'show', IFACE])).code === 0, 10_000, 'wireguard-go interface');
    await h.exec(['sh', '-c', `umask 077; printf '%s\\n' '${priv}' > ${join(c!.dir, 'go.key')}`], { check: true });
    await h.exec(['wg', 'set', IFACE, 'private-key', join(c!.dir, 'go.key'), 'listen-port', '51821', 'peer', ourPublic, 'endpoint', '[2001:db8::1]:51821', 'allowed-ips', ourSubnet6], { check: true });
    await h.exec(['ip', '-6', 'addr', 'add', `${GO_ADDR6}/128`, 'dev', IFACE, 'nodad'], { check: true });
    await h.exec(['ip', 'link', 'set', IFACE, 'mtu', '1420', 'up'], { check: true });
    await h.exec(['ip', '-6', 'route', 'replace', 'fd00:63::/56', 'dev', IFACE], { check: true });
  }

  before(async () => {
    c = await cluster(2, 'ftg6');
  });
  after(async () => {
    wgGo?.kill('SIGKILL');
    await teardown(c);
  });

  test('handshake and IPv6 traffic both ways, initiated from either side', async () => {
    const [h0, h1] = c!.set.hosts as [TestHost, TestHost];
    const priv = (await h1.exec(['wg', 'genkey'], { check: true })).stdout.trim();
    const pub = (await h1.exec(['sh', '-c', `printf '%s\\n' '${priv}' | wg pubkey`], { check: true })).stdout.trim();
    // wireguard-go's host as flannel's dual-stack wireguard backend publishes it (only its IPv6 side answers).
    await c!.store.put(
      `${P}/subnets/10.63.200.0-24&fd00:63:0:c8::-64`,
      JSON.stringify({ PublicIP: h1.ip, PublicIPv6: '2001:db8::2', BackendType: 'wireguard', BackendData: { PublicKey: pub }, BackendV6Data: { PublicKey: pub } }),
    );
    await bringUp(c!, [0]);
    const ours = JSON.parse((await c!.store.get(await leaseKeyOf(c!, 0)))!.value).BackendV6Data.PublicKey as string;
    const own6 = c!.pod6[0]!.replace(/::1$/, '::/64');
    await startWireGuardGo(h1, priv, ours, own6);
    const pingFrom0 = async () => (await h0.exec(['ping', '-6', '-c', '1', '-W', '1', '-I', c!.pod6[0]!, GO_ADDR6], { timeoutMs: 5000 })).code === 0;
    const pingFrom1 = async () => (await h1.exec(['ping', '-6', '-c', '1', '-W', '1', '-I', GO_ADDR6, c!.pod6[0]!], { timeoutMs: 5000 })).code === 0;
    await waitFor(pingFrom0, 20_000, 'flannel-ts -> wireguard-go over IPv6', 300);
    await waitFor(pingFrom1, 10_000, 'wireguard-go -> flannel-ts over IPv6', 300);
    const shown = (await h1.exec(['wg', 'show', IFACE, 'endpoints'], { check: true })).stdout;
    assert.match(shown, /\[2001:db8::1\]:51821/);
    const m0 = await metrics(h0);
    assert.ok(metric(m0, /flannel_wireguard_v6_handshakes_total\{kind="initiation_sent"\} (\d+)/) >= 1);

    // wireguard-go initiates: a fresh one (no session) pings first.
    wgGo!.kill('SIGKILL');
    await waitFor(async () => (await h1.exec(['ip', 'link', 'show', IFACE])).code !== 0, 10_000, 'wireguard-go gone');
    await startWireGuardGo(h1, priv, ours, own6);
    const before = metric(await metrics(h0), /flannel_wireguard_v6_handshakes_total\{kind="initiation_received"\} (\d+)/);
    await waitFor(pingFrom1, 20_000, 'wireguard-go -> flannel-ts over IPv6 (it initiates)', 300);
    const m1 = await metrics(h0);
    assert.ok(metric(m1, /flannel_wireguard_v6_handshakes_total\{kind="initiation_received"\} (\d+)/) > before, 'flannel-ts answered an initiation on flannel-wg-v6');
  });
});

/** A hostile flannel-wg-v6 peer (host 2: a lease with its key, no flanneld) floods [2001:db8::1]:51821. */
describe('wireguard backend (userspace) flannel-wg-v6: 30,000 hostile datagrams during an iperf3', { timeout: 180_000 }, () => {
  let c: Cluster | undefined;
  before(async () => {
    c = await cluster(3, 'ftf6');
  });
  after(() => teardown(c));

  test('the daemon keeps running, every datagram is dropped and counted by reason, initiations of one source cut by its budget, iperf3 -6 completes', async (t) => {
    const [h0, h1, h2] = c!.set.hosts as [TestHost, TestHost, TestHost];
    const { generateKeyPair } = await import('../../src/wireguard/primitives.js');
    const { startIperfServer, iperfClient } = await import('../helpers/iperf.js');
    const { fileURLToPath } = await import('node:url');
    const peer = generateKeyPair();
    const pub = peer.publicKey.toString('base64');
    await c!.store.put(
      `${P}/subnets/10.63.3.0-24&fd00:63:0:3::-64`,
      JSON.stringify({ PublicIP: h2.ip, PublicIPv6: c!.ip6[2], BackendType: 'wireguard', BackendData: { PublicKey: pub }, BackendV6Data: { PublicKey: pub } }),
    );
    await bringUp(c!, [0, 1]);
    await pingsEventually(c!, 0, 1, true);
    const targetPublic = JSON.parse((await c!.store.get(await leaseKeyOf(c!, 0)))!.value).BackendV6Data.PublicKey as string;
    const snmp6 = async () => {
      const r = await h0.exec(['cat', '/proc/net/snmp6']);
      return Number(/^Udp6RcvbufErrors\s+(\d+)/m.exec(r.stdout)?.[1] ?? 0);
    };
    const counter = (m: string, kind: string, name: string) => metric(m, new RegExp(`flannel_wireguard_v6_${kind}\\{${name}\\} (\\d+)`));
    const m0 = await metrics(h0);
    const k0 = await snmp6();
    const stopServer = await startIperfServer(h1, c!.pod6[1]!);
    const client = iperfClient(h0, c!.pod6[0]!, c!.pod6[1]!, 5);
    const plan: [string, number][] = [['random', 8_000], ['truncated', 3_000], ['replay', 5_000], ['tampered', 5_000], ['wrongkey', 4_000], ['unknownindex', 2_000], ['initiation', 3_000]];
    const fixture = fileURLToPath(new URL('./fixtures/wg-flood.js', import.meta.url));
    const flood = h2.exec(
      [process.execPath, fixture, JSON.stringify({ target: c!.ip6[0], port: 51821, bind: c!.ip6[2], privateKey: peer.privateKey.toString('base64'), targetPublic, src: 'fd00:63:0:3::5', dst: c!.pod6[0]!.replace(/::1$/, '::9'), plan })],
      { timeoutMs: 120_000 },
    );
    const [bps, f] = await Promise.all([client, flood]);
    stopServer();
    assert.equal(f.code, 0, f.stderr);
    t.diagnostic(`iperf3 -6 during the flood: ${(bps / 1e9).toFixed(2)} Gbit/s`);
    assert.ok(c!.daemons[0]!.alive, 'the daemon keeps running');
    const m1 = await metrics(h0);
    const kernelDrops = (await snmp6()) - k0;
    const d = (kind: string, name: string) => counter(m1, kind, name) - counter(m0, kind, name);
    const drops = { malformed: d('dropped_total', 'reason="malformed"'), replay: d('dropped_total', 'reason="replay"'), badMac: d('dropped_total', 'reason="bad_mac"'), stale: d('dropped_total', 'reason="stale_session"') };
    const initiations = { cookies: d('handshakes_total', 'kind="cookie_reply_sent"'), backlog: d('dropped_total', 'reason="handshake_backlog"'), limited: d('dropped_total', 'reason="handshake_rate_limited"'), worked: d('handshakes_total', 'kind="initiation_received"') };
    t.diagnostic(`drops ${JSON.stringify(drops)}, initiations ${JSON.stringify(initiations)}, kernel receive-buffer drops ${kernelDrops}`);
    const own = (JSON.parse(/SENT (.*)/.exec(f.stdout)![1]!) as { handshake: number }).handshake;
    if (kernelDrops === 0) {
      assert.deepEqual(drops, { malformed: 11_000, replay: 5_000, badMac: 9_000, stale: 2_000 });
      assert.equal(initiations.cookies + initiations.backlog + initiations.limited + initiations.worked, 3_000 + own);
    } else {
      const total = drops.malformed + drops.replay + drops.badMac + drops.stale + initiations.cookies + initiations.backlog + initiations.limited + initiations.worked - own;
      assert.ok(total <= 30_000 && total + kernelDrops >= 30_000, JSON.stringify({ drops, initiations, kernelDrops }));
    }
    // One source's flood is cut by its own budget in the rx worker, before any handshake work.
    assert.ok(initiations.limited > 2500, `rate-limited ${initiations.limited}`);
    assert.ok(initiations.worked + initiations.cookies < 500, `handshakes worked ${initiations.worked}, cookies ${initiations.cookies}`);
    await pingsEventually(c!, 0, 1, true);
  });
});
