/**
 * The wireguard backend's Modes and address families, as flannel's: which
 * devices (flannel-wg, flannel-wg-v6), which peer a lease is on each (key
 * from BackendData or BackendV6Data, endpoint family, allowed IPs), the
 * kernel path's commands as a recorded plan (this kernel has no WireGuard),
 * what the lease publishes, and the userspace path refusing what it cannot
 * carry before anything is written.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { endpointText, peerOf, wgDevices, type WgDeviceSpec } from '../../src/backend/wireguard/peers.js';
import { wgConfig } from '../../src/backend/wireguard/kernel.js';
import { WireGuardBackend } from '../../src/backend/wireguard/index.js';
import { parseWireGuardOptions } from '../../src/backend/wireguard/options.js';
import type { BackendContext } from '../../src/backend/types.js';
import { IpRoute } from '../../src/net/iproute.js';
import { parseIP4Net, parseIP6Net } from '../../src/net/ipaddr.js';
import { setLogSink } from '../../src/log.js';
import { generateKeyPair } from '../../src/wireguard/primitives.js';
import type { Lease } from '../../src/subnet/types.js';
import { backendContext } from '../helpers/backend-context.js';

const lines: string[] = [];
setLogSink((l) => lines.push(l));
const dir = await mkdtemp(join(tmpdir(), 'ft-wgmodes-'));
after(() => rm(dir, { recursive: true, force: true }));

const key4 = generateKeyPair().publicKey.toString('base64');
const key6 = generateKeyPair().publicKey.toString('base64');

function lease(opts: { subnet?: string; subnet6?: string; ip?: string; ip6?: string | null; data?: unknown; data6?: unknown }): Lease {
  return {
    key: `subnets/${(opts.subnet ?? '10.5.2.0/24').replace('/', '-')}`,
    subnet: opts.subnet === '' ? null : parseIP4Net(opts.subnet ?? '10.5.2.0/24'),
    ipv6Subnet: opts.subnet6 ? parseIP6Net(opts.subnet6) : null,
    attrs: { publicIP: opts.ip ?? '192.0.2.2', publicIPv6: opts.ip6 ?? null, backendType: 'wireguard', backendData: opts.data, backendV6Data: opts.data6 },
    expiration: 0,
  };
}

const dual = () => lease({ subnet: '10.5.2.0/24', subnet6: 'fd00:5:0:2::/64', ip: '192.0.2.2', ip6: '2001:db8::2', data: { PublicKey: key4 }, data6: { PublicKey: key6 } });
const peerOn = (l: Lease, dev: WgDeviceSpec, local = {}) => {
  const v = peerOf(l, dev, local);
  assert.ok('peer' in v, JSON.stringify(v));
  return v.peer;
};

test('devices per Mode: separate makes flannel-wg (IPv4, ListenPort) and flannel-wg-v6 (IPv6, ListenPortV6); the others one flannel-wg for every family', () => {
  assert.deepEqual(wgDevices('separate', true, true, 51820, 51821), [
    { name: 'flannel-wg', listenPort: 51820, carriesIPv4: true, carriesIPv6: false, endpoints: 'ipv4' },
    { name: 'flannel-wg-v6', listenPort: 51821, carriesIPv4: false, carriesIPv6: true, endpoints: 'ipv6' },
  ]);
  assert.deepEqual(wgDevices('separate', true, false, 51820, 51821).map((d) => d.name), ['flannel-wg']);
  assert.deepEqual(wgDevices('separate', false, true, 51820, 51821).map((d) => d.name), ['flannel-wg-v6']);
  for (const mode of ['auto', 'ipv4', 'ipv6'] as const) {
    assert.deepEqual(wgDevices(mode, true, true, 6000, 6001), [{ name: 'flannel-wg', listenPort: 6000, carriesIPv4: true, carriesIPv6: true, endpoints: mode }]);
  }
});

test('separate: the IPv4 peer takes BackendData and PublicIP:ListenPort, the IPv6 peer BackendV6Data and [PublicIPv6]:ListenPortV6', () => {
  const [v4dev, v6dev] = wgDevices('separate', true, true, 51820, 51821) as [WgDeviceSpec, WgDeviceSpec];
  const p4 = peerOn(dual(), v4dev);
  assert.deepEqual([p4.publicKeyText, endpointText(p4), p4.allowedIPs, p4.endpointFamily], [key4, '192.0.2.2:51820', ['10.5.2.0/24'], 4]);
  const p6 = peerOn(dual(), v6dev);
  assert.deepEqual([p6.publicKeyText, endpointText(p6), p6.allowedIPs, p6.endpointFamily], [key6, '[2001:db8::2]:51821', ['fd00:5:0:2::/64'], 6]);
  // A lease without an IPv6 side is no peer of flannel-wg-v6, and says why.
  assert.deepEqual(peerOf(lease({ data: { PublicKey: key4 } }), v6dev), { skip: 'no IPv6 subnet' });
  assert.deepEqual(peerOf(lease({ subnet6: 'fd00:5:0:3::/64', data: { PublicKey: key4 }, data6: { PublicKey: key6 } }), v6dev), { skip: 'no usable PublicIPv6' });
  assert.deepEqual(peerOf(lease({ subnet6: 'fd00:5:0:3::/64', ip6: '2001:db8::3', data: { PublicKey: key4 } }), v6dev), { skip: 'BackendV6Data has no valid PublicKey' });
});

test('one device: both subnets as allowed IPs, the key from BackendV6Data (as flannel), the endpoint by Mode; auto as flannel selects it', () => {
  const dev = (mode: 'auto' | 'ipv4' | 'ipv6') => wgDevices(mode, true, true, 51820, 51821)[0]!;
  const p = peerOn(dual(), dev('ipv4'));
  assert.deepEqual([p.publicKeyText, endpointText(p), p.allowedIPs], [key6, '192.0.2.2:51820', ['10.5.2.0/24', 'fd00:5:0:2::/64']]);
  assert.equal(endpointText(peerOn(dual(), dev('ipv6'))), '[2001:db8::2]:51820');
  assert.deepEqual(peerOf(lease({ subnet6: 'fd00:5:0:3::/64', data6: { PublicKey: key6 } }), dev('ipv6')), { skip: 'no usable PublicIPv6' });
  // auto: a public IPv4 peer and our IPv4: IPv4.
  assert.equal(endpointText(peerOn(dual(), dev('auto'), { extAddr: '192.0.2.1', extAddr6: '2001:db8::1' })), '192.0.2.2:51820');
  // A private IPv4 peer, public IPv6 both ends: IPv6; our IPv6 private (ULA) or missing: IPv4 still.
  const priv = () => lease({ subnet: '10.5.2.0/24', subnet6: 'fd00:5:0:2::/64', ip: '10.1.0.2', ip6: '2001:db8::2', data6: { PublicKey: key6 } });
  assert.equal(endpointText(peerOn(priv(), dev('auto'), { extAddr: '10.1.0.1', extAddr6: '2001:db8::1' })), '[2001:db8::2]:51820');
  assert.equal(endpointText(peerOn(priv(), dev('auto'), { extAddr: '10.1.0.1', extAddr6: 'fd12::1' })), '10.1.0.2:51820');
  assert.equal(endpointText(peerOn(priv(), dev('auto'), { extAddr: '10.1.0.1' })), '10.1.0.2:51820');
  // Only an IPv6 address published: IPv6.
  const only6 = lease({ subnet: '10.5.2.0/24', subnet6: 'fd00:5:0:2::/64', ip: '', ip6: '2001:db8::2', data6: { PublicKey: key6 } });
  assert.equal(endpointText(peerOn(only6, dev('auto'), { extAddr: '192.0.2.1' })), '[2001:db8::2]:51820');
});

test('the wg syncconf file writes an IPv6 endpoint in brackets and every allowed IP of a peer', () => {
  const key = generateKeyPair().privateKey;
  const p = peerOn(dual(), wgDevices('auto', true, true, 51820, 51821)[0]!, { extAddr: '10.1.0.1', extAddr6: '2001:db8::1' });
  const p6 = peerOn(dual(), wgDevices('separate', true, true, 51820, 51821)[1]!);
  const opts = parseWireGuardOptions({});
  assert.equal(wgConfig(key, opts, 51821, [p6]), `[Interface]\nPrivateKey = ${key.toString('base64')}\nListenPort = 51821\n\n[Peer]\nPublicKey = ${key6}\nEndpoint = [2001:db8::2]:51821\nAllowedIPs = fd00:5:0:2::/64\n`);
  assert.match(wgConfig(key, opts, 51820, [p]), /\nEndpoint = 192\.0\.2\.2:51820\nAllowedIPs = 10\.5\.2\.0\/24, fd00:5:0:2::\/64\n$/);
});

const ctx = (config: Record<string, unknown>): BackendContext =>
  backendContext(config, { extIface: { name: 'eth0', index: 2, mtu: 1500, ifaceAddr: '192.0.2.1', extAddr: '192.0.2.1', ifaceAddr6: '2001:db8::1', extAddr6: '2001:db8::1' } });

const DUAL = { Network: '10.5.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:5::/48', Backend: { Type: 'wireguard' } };

test('kernel path, Mode separate, dual stack, as a recorded plan: two links, /32 and /128, a route per Network, one syncconf per device', async () => {
  const transcript: string[] = [];
  const ip = new IpRoute({ mode: 'plan', transcript });
  const wg = new IpRoute({ mode: 'plan', binary: 'wg', transcript });
  const c = ctx(DUAL);
  const be = new WireGuardBackend(c, parseWireGuardOptions(c.backendConfig), { keyFile: join(dir, 'sep.key'), impl: 'kernel', socketDir: dir }, { ip, wg });
  const attrs = await be.prepare();
  // As flannel's newSubnetAttrs: the one key in BackendData and BackendV6Data.
  const pub = (attrs.backendData as { PublicKey: string }).PublicKey;
  assert.deepEqual(attrs, { backendType: 'wireguard', backendData: { PublicKey: pub }, backendV6Data: { PublicKey: pub } });
  const own: Lease = { key: 'subnets/10.5.1.0-24', subnet: parseIP4Net('10.5.1.0/24'), ipv6Subnet: parseIP6Net('fd00:5:0:1::/64'), attrs: { publicIP: '192.0.2.1', publicIPv6: '2001:db8::1' }, expiration: 0 };
  await be.start(own);
  transcript.length = 0;
  await be.handleEvents([{ type: 'added', lease: dual() }]);
  assert.deepEqual(
    transcript.map((l) => l.replace(/\/\S*\.(flannel-wg(?:-v6)?)\.\d+\.[0-9a-f]+\.conf/, '/<$1>')),
    ['wg syncconf flannel-wg /<flannel-wg>', 'wg syncconf flannel-wg-v6 /<flannel-wg-v6>'],
  );
  transcript.length = 0;
  await be.handleEvents([{ type: 'removed', lease: dual() }]);
  assert.equal(transcript.length, 2, 'the peer leaves both devices');
  assert.ok(!(await readdir(dir)).some((f) => f.endsWith('.conf')), 'no config file (it holds the key) is left');
  transcript.length = 0;
  await be.stop();
  assert.deepEqual(transcript, ['ip link del dev flannel-wg', 'ip link del dev flannel-wg-v6']);
});

test('kernel path start: each device as flannel configures it (plan)', async () => {
  const transcript: string[] = [];
  const ip = new IpRoute({ mode: 'plan', transcript });
  const wg = new IpRoute({ mode: 'plan', binary: 'wg', transcript });
  const own: Lease = { key: 'subnets/10.5.1.0-24', subnet: parseIP4Net('10.5.1.0/24'), ipv6Subnet: parseIP6Net('fd00:5:0:1::/64'), attrs: { publicIP: '192.0.2.1', publicIPv6: '2001:db8::1' }, expiration: 0 };
  const plan = async (backend: Record<string, unknown>) => {
    transcript.length = 0;
    const c = ctx({ ...DUAL, Backend: backend });
    const be = new WireGuardBackend(c, parseWireGuardOptions(backend), { keyFile: join(dir, 'start.key'), impl: 'kernel', socketDir: dir }, { ip, wg });
    await be.prepare();
    transcript.length = 0;
    await be.start(own);
    const planned = transcript.map((l) => l.replace(/\/\S*\.(flannel-wg(?:-v6)?)\.\d+\.[0-9a-f]+\.conf/, '/<conf>'));
    // It holds the key file until it stops.
    await be.stop();
    return planned;
  };
  const device = (name: string, v4: boolean, v6: boolean) => [
    `ip -d -json link show dev ${name}`,
    `ip link add dev ${name} type wireguard`,
    `wg syncconf ${name} /<conf>`,
    ...(v4 ? [`ip -4 -o addr show dev ${name}`, `ip addr add 10.5.1.0/32 dev ${name}`] : []),
    ...(v6 ? [`ip -6 -o addr show dev ${name}`, `ip -6 addr add fd00:5:0:1::/128 dev ${name}`] : []),
    `ip link set dev ${name} mtu 1420 up`,
    ...(v4 ? [`ip route replace 10.5.0.0/16 dev ${name} scope link`] : []),
    ...(v6 ? [`ip -6 route replace fd00:5::/48 dev ${name}`] : []),
  ];
  assert.deepEqual(await plan({ Type: 'wireguard' }), [...device('flannel-wg', true, false), ...device('flannel-wg-v6', false, true)]);
  assert.deepEqual(await plan({ Type: 'wireguard', Mode: 'auto' }), device('flannel-wg', true, true));
});

test('userspace path: every Mode makes the devices flannel makes, each carrying its pod families over its endpoints', async () => {
  const V6ONLY = { EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:5::/48' };
  const devicesOf = async (config: Record<string, unknown>) => {
    const c = ctx(config);
    const be = new WireGuardBackend(c, parseWireGuardOptions(c.backendConfig), { keyFile: join(dir, 'us.key'), impl: 'userspace', socketDir: dir });
    await be.prepare();
    try {
      return be.userspaceDevices.map((d) => ({ name: d.udp.tunName, pods: `${d.udp.pods.ipv4 ? '4' : ''}${d.udp.pods.ipv6 ? '6' : ''}`, endpoints: d.udp.endpointMode, port: d.udp.config.port }));
    } finally {
      // It holds the key file until it stops.
      await be.stop();
    }
  };
  const mode = (m: string, base: Record<string, unknown> = DUAL) => devicesOf({ ...base, Backend: { Type: 'wireguard', Mode: m } });
  assert.deepEqual(await devicesOf(DUAL), [
    { name: 'flannel-wg', pods: '4', endpoints: 'ipv4', port: 51820 },
    { name: 'flannel-wg-v6', pods: '6', endpoints: 'ipv6', port: 51821 },
  ]);
  assert.deepEqual(await mode('ipv4'), [{ name: 'flannel-wg', pods: '46', endpoints: 'ipv4', port: 51820 }]);
  assert.deepEqual(await mode('ipv6'), [{ name: 'flannel-wg', pods: '46', endpoints: 'ipv6', port: 51820 }]);
  assert.deepEqual(await mode('auto'), [{ name: 'flannel-wg', pods: '46', endpoints: 'dual', port: 51820 }]);
  assert.deepEqual(await mode('auto', { Network: '10.5.0.0/16' }), [{ name: 'flannel-wg', pods: '4', endpoints: 'ipv4', port: 51820 }], 'no IPv6 endpoints without EnableIPv6');
  assert.deepEqual(await mode('ipv6', { Network: '10.5.0.0/16' }), [{ name: 'flannel-wg', pods: '4', endpoints: 'ipv6', port: 51820 }]);
  assert.deepEqual(await devicesOf({ ...V6ONLY, Backend: { Type: 'wireguard' } }), [{ name: 'flannel-wg-v6', pods: '6', endpoints: 'ipv6', port: 51821 }]);
  assert.deepEqual(await mode('ipv6', V6ONLY), [{ name: 'flannel-wg', pods: '6', endpoints: 'ipv6', port: 51820 }]);
  assert.deepEqual(await mode('auto', V6ONLY), [{ name: 'flannel-wg', pods: '6', endpoints: 'dual', port: 51820 }]);
});

test('--dry-run plans the kernel path: no key file created, no config file, nothing deleted at stop; the userspace path has nothing to plan', async () => {
  const c = { ...ctx(DUAL), dryRun: true };
  const keyFile = join(dir, 'dry', 'wgkey');
  const plan = new IpRoute({ mode: 'plan' });
  const be = new WireGuardBackend(c, parseWireGuardOptions(c.backendConfig), { keyFile, impl: 'auto', socketDir: dir }, { readIp: plan });
  const attrs = await be.prepare();
  assert.equal(be.impl, 'kernel');
  assert.match((attrs.backendData as { PublicKey: string }).PublicKey, /^[A-Za-z0-9+/]{43}=$/);
  const own: Lease = { key: 'subnets/10.5.1.0-24', subnet: parseIP4Net('10.5.1.0/24'), ipv6Subnet: parseIP6Net('fd00:5:0:1::/64'), attrs: { publicIP: '192.0.2.1', publicIPv6: '2001:db8::1' }, expiration: 0 };
  await be.start(own);
  await be.handleEvents([{ type: 'added', lease: dual() }]);
  await be.stop();
  const cmds = be.plannedCommands();
  assert.deepEqual(cmds.filter((l) => l.startsWith('wg ')), [
    'wg syncconf flannel-wg <config: no peers>',
    'wg syncconf flannel-wg-v6 <config: no peers>',
    'wg syncconf flannel-wg <config: 192.0.2.2:51820 10.5.2.0/24>',
    'wg syncconf flannel-wg-v6 <config: [2001:db8::2]:51821 fd00:5:0:2::/64>',
  ]);
  assert.ok(cmds.includes('ip link add dev flannel-wg-v6 type wireguard') && !cmds.some((l) => l.includes('link del')), cmds.join('\n'));
  assert.ok(!(await readdir(dir)).includes('dry'), 'no key file (nor its directory) created');
  const u = new WireGuardBackend(c, parseWireGuardOptions(c.backendConfig), { keyFile, impl: 'userspace', socketDir: dir }, { readIp: plan });
  await assert.rejects(u.prepare(), /no kernel state to plan/);
});
