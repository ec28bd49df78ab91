/**
 * Two userspace WireGuard devices wired together in one process (a fake
 * socket carries their datagrams; sealing and opening are the addon's real
 * calls): handshake, the responder's keypair confirmed by the first
 * transport packet, every transport drop reason, cookies under load, a
 * replayed initiation; and the backend's own pieces: options, key file,
 * peers from leases, the kernel path's plan, the wg API.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadNative, type NativeAddon } from '../../src/native/addon.js';
import { PacketBatch } from '../../src/tun/packet-batch.js';
import { WireGuardDevice, UNDER_LOAD_PER_SECOND } from '../../src/wireguard/device.js';
import { createPeerTableBuffers, PeerTable, NO_KEYPAIR, KeypairFlag, SentBytesBy } from '../../src/wireguard/peer-table.js';
import { WireGuardTransport, type TransportNote } from '../../src/wireguard/transport.js';
import { createWgCounterBuffer, readWgCounters, wgCounterRegion, WG_REGION_MAIN, WG_REGION_RX, WG_REGION_TX } from '../../src/wireguard/counters.js';
import { generateKeyPair } from '../../src/wireguard/primitives.js';
import { applySet, renderGet, serveUapi } from '../../src/wireguard/uapi.js';
import { parseKey, parseWireGuardOptions, wireGuardHostSettings } from '../../src/backend/wireguard/options.js';
import { loadOrCreatePrivateKey } from '../../src/backend/wireguard/key-file.js';
import { peerOf, peerSet, wgDevices } from '../../src/backend/wireguard/peers.js';
import { KernelWireGuard, wgConfig } from '../../src/backend/wireguard/kernel.js';
import { IpRoute } from '../../src/net/iproute.js';
import { parseIP4, parseIP4Net } from '../../src/net/ipaddr.js';
import { createLogger } from '../../src/log.js';
import type { Lease } from '../../src/subnet/types.js';

const dir = await mkdtemp(join(tmpdir(), 'fts-wgdev-'));
after(() => rm(dir, { recursive: true, force: true }));
const log = createLogger('test');
const native = loadNative();
const A_ADDR = parseIP4('192.0.2.1');
const B_ADDR = parseIP4('192.0.2.2');

interface Side {
  dev: WireGuardDevice;
  table: PeerTable;
  counters: SharedArrayBuffer;
  tx: WireGuardTransport;
  rx: WireGuardTransport;
  /** Datagrams this side sent, not yet delivered. */
  outbox: { data: Buffer; addr: number; port: number }[];
  addr: number;
}

/** An addon whose udpSend collects datagrams instead of sending (everything else is the real addon). */
function collectingAddon(outbox: Side['outbox']): NativeAddon {
  return {
    ...native,
    udpSend: (_fd: number, buf: Buffer, slot: number, lens: Uint32Array, addrs: Uint32Array, ports: Uint16Array, count: number) => {
      for (let i = 0; i < count; i++) outbox.push({ data: Buffer.from(buf.subarray(i * slot, i * slot + lens[i]!)), addr: addrs[i]!, port: ports[i]! });
      return count;
    },
  };
}

function side(addr: number, now: () => number): Side {
  const buffers = createPeerTableBuffers(64, 8);
  const table = new PeerTable(buffers);
  const counters = createWgCounterBuffer();
  const outbox: Side['outbox'] = [];
  const addon = collectingAddon(outbox);
  const dev = new WireGuardDevice({ privateKey: generateKeyPair().privateKey, table, stats: wgCounterRegion(counters, WG_REGION_MAIN), socket: () => ({ addon, fd: 3 }), log, listenPort: 51820, now });
  const cfg = { table: buffers, counters, publicKey: dev.publicKey };
  // Handshakes the rx worker hands over go to the device at once, as the main thread would.
  const toMain = (note: TransportNote) => {
    if (note.type !== 'handshake') return;
    table.handshakeTaken();
    dev.handleHandshake(Buffer.from(note.data), note.addr, note.port);
  };
  return {
    dev,
    table,
    counters,
    tx: new WireGuardTransport(native, cfg, wgCounterRegion(counters, WG_REGION_TX), undefined, now),
    rx: new WireGuardTransport(native, cfg, wgCounterRegion(counters, WG_REGION_RX), toMain, now),
    outbox,
    addr,
  };
}

/** Deliver everything `from` sent to `to` through to's rx transport; returns the inner packets that came out. */
function deliver(from: Side, to: Side, mutate?: (d: Buffer, i: number) => Buffer | null): Buffer[] {
  const msgs = from.outbox.splice(0);
  const b = new PacketBatch(Math.max(msgs.length, 1), 2048);
  let n = 0;
  msgs.forEach((m, i) => {
    const d = mutate ? mutate(m.data, i) : m.data;
    if (!d) return;
    d.copy(b.buf, n * 2048);
    b.lens[n] = d.length;
    b.addrs[n] = from.addr;
    b.ports[n] = 51820;
    n++;
  });
  const out = to.rx.open(b, n);
  return Array.from({ length: out }, (_, i) => Buffer.from(b.buf.subarray(i * 2048, i * 2048 + b.lens[i]!)));
}

/** An IPv4 packet of `len` bytes (header valid enough for the length trim). */
function ipPacket(len: number, tag: number): Buffer {
  const p = Buffer.alloc(len, tag);
  p[0] = 0x45;
  p.writeUInt16BE(len, 2);
  return p;
}

/** An IPv6 packet of `len` bytes (version and payload length set, for the length trim). */
function ip6Packet(len: number, tag: number): Buffer {
  const p = Buffer.alloc(len, tag);
  p[0] = 0x60;
  p.writeUInt16BE(len - 40, 4);
  return p;
}

/** The slot of the peer reached at `addr` (routes name peers by their key's slot); an unused slot when none is. */
function slotAt(s: Side, addr: number): number {
  for (let p = 0; p < s.table.peerCapacity; p++) if (s.table.peerActive(p) && s.table.endpointAddr(p) === addr >>> 0) return p;
  return s.table.peerCapacity - 1;
}

/** Seal `packets` from `s` to the peer at address `to` through its tx transport into its outbox. */
function send(s: Side, to: number, packets: Buffer[]): number {
  const b = new PacketBatch(Math.max(packets.length, 1), 2048);
  const slot = slotAt(s, to);
  packets.forEach((p, i) => {
    p.copy(b.buf, i * 2048);
    b.lens[i] = p.length;
    b.addrs[i] = slot;
    b.ports[i] = 51820;
  });
  const n = s.tx.seal(b, packets.length);
  for (let i = 0; i < n; i++) s.outbox.push({ data: Buffer.from(b.buf.subarray(i * 2048, i * 2048 + b.lens[i]!)), addr: b.addrs[i]!, port: b.ports[i]! });
  return n;
}

/** A session from a to b: a's first packet wishes a handshake, initiation, response, the confirming keepalive. */
function establish(a: Side, b: Side): void {
  send(a, B_ADDR, [ipPacket(100, 1)]);
  a.dev.tick();
  deliver(a, b);
  deliver(b, a);
  deliver(a, b);
}

/**
 * b under load: more handshake messages than UNDER_LOAD_PER_SECOND within
 * the second, from many sources (the rx worker lets each source only a few
 * a second; replies to them go nowhere here; replays of one initiation are
 * cheapest), then a's own initiation delivered to b.
 */
function floodThenInitiate(a: Side, b: Side): void {
  a.table.wantHandshake(0);
  a.dev.tick();
  const [init] = a.outbox.splice(0);
  for (let i = 0; i < UNDER_LOAD_PER_SECOND + 5; i++) b.dev.handleHandshake(Buffer.from(init!.data), parseIP4('198.18.0.0') + i, 51820);
  b.outbox.length = 0;
  a.outbox.push({ ...init!, data: Buffer.from(init!.data) });
  deliver(a, b);
}

function pair(now: () => number) {
  const a = side(A_ADDR, now);
  const b = side(B_ADDR, now);
  a.dev.setPeers([{ publicKey: b.dev.publicKey, addr: B_ADDR, port: 51820, psk: null, keepaliveMs: 0, allowedIPs: ['10.5.2.0/24'] }]);
  b.dev.setPeers([{ publicKey: a.dev.publicKey, addr: A_ADDR, port: 51820, psk: null, keepaliveMs: 0, allowedIPs: ['10.5.1.0/24'] }]);
  return { a, b };
}

test('two senders on one keypair (the tx worker, and the rx worker sending the kernel\'s replies): no nonce twice, every byte counted', () => {
  let t = 1_700_000_000_000;
  const now = () => t;
  const { a, b } = pair(now);
  establish(a, b);
  const replies = new WireGuardTransport(native, { table: a.table.buffers, counters: a.counters, publicKey: a.dev.publicKey }, wgCounterRegion(a.counters, WG_REGION_RX), undefined, now, undefined, SentBytesBy.RxWorker);
  const tx = a.tx;
  const sizes = [300, 120, 900, 64, 1400, 80];
  sizes.forEach((len, i) => {
    a.tx = i % 2 === 0 ? tx : replies;
    assert.equal(send(a, B_ADDR, [ipPacket(len, 10 + i)]), 1);
  });
  a.tx = tx;
  const nonces = a.outbox.map((m) => m.data.readUInt32LE(8));
  assert.equal(new Set(nonces).size, sizes.length, `nonces ${nonces.join(',')}`);
  assert.deepEqual(deliver(a, b), sizes.map((len, i) => ipPacket(len, 10 + i)), 'all opened, none taken for a replay');
  assert.equal(readWgCounters(b.counters).dropReplay, 0);
  // wg show's transfer sums the senders' words, each counting whole datagrams as wireguard-go does
  // (16-byte header + plaintext padded to 16 + 16-byte tag), the main thread's included: the
  // 148-byte initiation and the 32-byte keepalive that confirmed the session.
  const datagrams = sizes.reduce((sum, len) => sum + 32 + Math.ceil(len / 16) * 16, 0);
  assert.match(renderGet(a.dev), new RegExp(`tx_bytes=${datagrams + 148 + 32}\n`));
});

test('handshake, confirmation, transport both ways; every drop counted by reason', () => {
  let t = 1_700_000_000_000;
  const now = () => t;
  const { a, b } = pair(now);
  // No session yet: the packet is dropped and a handshake wished for.
  assert.equal(send(a, B_ADDR, [ipPacket(100, 1)]), 0);
  assert.equal(readWgCounters(a.counters).dropNoSession, 1);
  a.dev.tick();
  assert.equal(a.outbox.length, 1, 'an initiation');
  deliver(a, b);
  assert.equal(b.outbox.length, 1, 'a response');
  assert.notEqual(b.table.next(0), NO_KEYPAIR, 'responder keypair waits as next');
  deliver(b, a);
  assert.notEqual(a.table.current(0), NO_KEYPAIR);
  assert.equal(a.outbox.length, 1, 'the initiator confirms with a keepalive');
  deliver(a, b);
  assert.ok(b.table.keypairFlags(b.table.next(0)) & KeypairFlag.Confirmed);
  b.dev.tick();
  assert.notEqual(b.table.current(0), NO_KEYPAIR, 'confirmed keypair became current');

  // Data both ways, padding removed by the IPv4 length.
  assert.equal(send(a, B_ADDR, [ipPacket(1400, 2), ipPacket(61, 3)]), 2);
  const got = deliver(a, b);
  assert.deepEqual(got, [ipPacket(1400, 2), ipPacket(61, 3)]);
  assert.equal(send(b, A_ADDR, [ipPacket(200, 4)]), 1);
  assert.deepEqual(deliver(b, a), [ipPacket(200, 4)]);
  // IPv6 (flannel-wg-v6): the padding to 16 bytes removed by the payload length.
  assert.equal(send(a, B_ADDR, [ip6Packet(61, 9), ip6Packet(1280, 10)]), 2);
  assert.deepEqual(deliver(a, b), [ip6Packet(61, 9), ip6Packet(1280, 10)]);

  // Replayed, tampered, stale index, truncated, unknown type, unknown peer.
  send(a, B_ADDR, [ipPacket(100, 5)]);
  const [pkt] = a.outbox.splice(0);
  const replay = () => a.outbox.push({ ...pkt! });
  replay();
  assert.equal(deliver(a, b).length, 1);
  replay();
  assert.equal(deliver(a, b).length, 0);
  replay();
  assert.equal(deliver(a, b, (d) => (d[40]! ^= 1, d)).length, 0);
  replay();
  assert.equal(deliver(a, b, (d) => (d.writeUInt32LE((0xdead0000 | 63) >>> 0, 4), d)).length, 0);
  replay();
  assert.equal(deliver(a, b, (d) => d.subarray(0, 20)).length, 0);
  replay();
  assert.equal(deliver(a, b, (d) => (d[0] = 9, d)).length, 0);
  assert.equal(send(a, parseIP4('192.0.2.77'), [ipPacket(100, 6)]), 0);
  const cb = readWgCounters(b.counters);
  assert.equal(cb.dropReplay, 1);
  assert.equal(cb.dropBadMac, 1);
  assert.equal(cb.dropStaleSession, 1);
  assert.equal(cb.dropMalformed, 2);
  assert.equal(readWgCounters(a.counters).dropUnknownPeer, 1);
  // Too big for the slot once sealed.
  assert.equal(send(a, B_ADDR, [ipPacket(2040, 7)]), 0);
  assert.equal(readWgCounters(a.counters).dropTooBig, 1);

  // Keys expire: after REJECT_AFTER_TIME nothing is sent with them.
  t += 181_000;
  assert.equal(send(a, B_ADDR, [ipPacket(100, 8)]), 0);
  assert.equal(readWgCounters(a.counters).dropNoSession, 2);
});

test('under load, initiations get cookie replies; with the cookie as mac2 the handshake goes through; a replayed initiation is refused', () => {
  let t = 1_700_000_100_000;
  const now = () => t;
  const { a, b } = pair(now);
  // Load: more handshake messages than UNDER_LOAD_PER_SECOND within the second (garbage with a valid mac1 would do; replays of one are cheapest).
  a.dev.tick();
  floodThenInitiate(a, b);
  const cb = readWgCounters(b.counters);
  assert.ok(cb.cookieRepliesSent >= 5, `cookie replies: ${cb.cookieRepliesSent}`);
  assert.ok(cb.responsesSent <= 1, 'no DH work for the flood');
  // The initiator takes a cookie reply and retries with mac2.
  const cookieReply = b.outbox.filter((m) => m.data[0] === 3).pop()!;
  b.outbox.length = 0;
  b.outbox.push(cookieReply);
  deliver(b, a);
  assert.equal(readWgCounters(a.counters).cookieRepliesReceived, 1);
  t += 6000;
  a.dev.tick(); // retry after REKEY_TIMEOUT, now with mac2
  const retry = a.outbox[a.outbox.length - 1]!;
  assert.ok(!retry.data.subarray(132, 148).equals(Buffer.alloc(16)), 'mac2 set');
  deliver(a, b);
  assert.ok(b.outbox.some((m) => m.data[0] === 2), 'still under load, the mac2 initiation is answered');
  // The same initiation again (a replay) is refused: its timestamp is not newer.
  const before = readWgCounters(b.counters).handshakesFailed;
  t += 1000; // a new second: not under load any more
  a.outbox.push({ ...retry, data: Buffer.from(retry.data) });
  deliver(a, b);
  assert.equal(readWgCounters(b.counters).handshakesFailed, before + 1);
});

test('options, key file, peers from leases', async () => {
  const o = parseWireGuardOptions({ Type: 'wireguard' });
  assert.deepEqual(o, { listenPort: 51820, listenPortV6: 51821, psk: null, keepaliveSeconds: 0, mode: 'separate' });
  const psk = Buffer.alloc(32, 7).toString('base64');
  assert.deepEqual(parseWireGuardOptions({ listenport: 5555, PSK: psk, PersistentKeepaliveInterval: 25, Mode: 'auto' }).psk, Buffer.alloc(32, 7));
  assert.throws(() => parseWireGuardOptions({ PSK: 'c2VjcmV0LXZhbHVl' }), (e: Error) => /PSK must be a WireGuard key/.test(e.message) && !e.message.includes('c2VjcmV0'));
  assert.throws(() => parseWireGuardOptions({ Mode: 'fast' }), /Mode must be one of separate, auto, ipv4, ipv6/);
  assert.throws(() => parseWireGuardOptions({ ListenPort: 70000 }), /ListenPort must be an integer in 1..65535/);
  assert.equal(parseKey('not a key'), null);
  assert.deepEqual(wireGuardHostSettings({}), { keyFile: '/run/flannel/wgkey', impl: 'auto', socketDir: '/var/run/wireguard' });

  const file = join(dir, 'sub', 'wgkey');
  const first = await loadOrCreatePrivateKey(file);
  assert.equal(first.created, true);
  assert.equal((await stat(file)).mode & 0o777, 0o600);
  assert.deepEqual(parseKey((await readFile(file, 'utf8')).trim()), first.key);
  // Lease text is never trimmed or repaired: only the one canonical form is a key.
  assert.equal(parseKey(` ${first.key.toString('base64')}`), null);
  assert.equal(parseKey(`${first.key.toString('base64')}\n`), null);
  const again = await loadOrCreatePrivateKey(file);
  assert.equal(again.created, false);
  assert.deepEqual(again.key, first.key);
  await writeFile(join(dir, 'bad'), 'secret-garbage');
  await assert.rejects(loadOrCreatePrivateKey(join(dir, 'bad')), (e: Error) => /does not hold a WireGuard private key/.test(e.message) && !e.message.includes('secret-garbage'));

  const pub = generateKeyPair().publicKey.toString('base64');
  const lease = (key: string, subnet: string, ip: string, data: unknown, type = 'wireguard'): Lease => ({ key, subnet: parseIP4Net(subnet), ipv6Subnet: null, attrs: { publicIP: ip, publicIPv6: null, backendType: type, backendData: data }, expiration: 0 });
  const dev = wgDevices('separate', true, false, 51820, 51821)[0]!;
  const v = peerOf(lease('subnets/10.5.2.0-24', '10.5.2.0/24', '192.0.2.2', { PublicKey: pub }), dev);
  assert.ok('peer' in v && v.peer.endpointIP === '192.0.2.2' && v.peer.port === 51820 && v.peer.allowedIPs.join() === '10.5.2.0/24' && v.peer.publicKeyText === pub);
  assert.deepEqual(peerOf(lease('k', '10.5.3.0/24', '192.0.2.3', { PublicKey: pub }, 'vxlan'), dev), { skip: 'BackendType vxlan' });
  assert.deepEqual(peerOf(lease('k', '10.5.3.0/24', '192.0.2.3', { PublicKey: 'short' }), dev), { skip: 'BackendData has no valid PublicKey' });
  assert.deepEqual(peerOf(lease('k', '10.5.3.0/24', '192.0.2.3', null), dev), { skip: 'BackendData has no valid PublicKey' });
  // Two leases of one PublicIP (a host that changed subnet and key): the later one is the peer.
  const p1 = (peerOf(lease('a', '10.5.4.0/24', '192.0.2.4', { PublicKey: pub }), dev) as { peer: never }).peer;
  const other = generateKeyPair().publicKey.toString('base64');
  const p2 = (peerOf(lease('b', '10.5.5.0/24', '192.0.2.4', { PublicKey: other }), dev) as { peer: never }).peer;
  // Peers are keys: one PublicIP with two keys is two peers, each with its own subnet (flannel kept only the newer).
  assert.deepEqual(peerSet(new Map([['a', p1], ['b', p2]])).map((p) => [p.publicKeyText, p.allowedIPs]), [[pub, ['10.5.4.0/24']], [other, ['10.5.5.0/24']]]);
  // One key in two leases is one peer with both subnets; a lease copying the key cannot move its endpoint.
  const copy = (peerOf(lease('c', '10.5.6.0/24', '192.0.2.66', { PublicKey: pub }), dev) as { peer: never }).peer;
  const conflicts: string[] = [];
  const merged = peerSet(new Map([['a', p1], ['c', copy]]), conflicts);
  assert.deepEqual(merged.map((p) => [p.publicKeyText, p.endpointIP, p.allowedIPs]), [[pub, '192.0.2.4', ['10.5.4.0/24', '10.5.6.0/24']]]);
  assert.deepEqual(conflicts, [pub]);
});

test('kernel path as a recorded plan: the link, one wg syncconf per change, address, MTU, route; the config file', async () => {
  const transcript: string[] = [];
  const ip = new IpRoute({ mode: 'plan', transcript });
  const wg = new IpRoute({ mode: 'plan', binary: 'wg', transcript });
  const key = generateKeyPair().privateKey;
  const opts = parseWireGuardOptions({ PSK: Buffer.alloc(32, 1).toString('base64'), PersistentKeepaliveInterval: 25 });
  const k = new KernelWireGuard(ip, wg, ip, wgDevices('separate', true, false, 51820, 51821), { network: parseIP4Net('10.5.0.0/16'), ipv6Network: null }, 1420, key, opts, join(dir, 'wgkey'), log);
  await k.start({ subnet: parseIP4Net('10.5.1.0/24'), ipv6Subnet: null });
  const pub = generateKeyPair().publicKey.toString('base64');
  const peer = { leaseKey: 'x', publicKey: Buffer.from(pub, 'base64'), publicKeyText: pub, endpointIP: '192.0.2.2', endpointFamily: 4 as const, port: 51820, allowedIPs: ['10.5.2.0/24'] };
  await k.setPeers('flannel-wg', [peer]);
  await k.setPeers('flannel-wg', [peer]);
  const plan = transcript.map((l) => l.replace(/\/\S*\.flannel-wg\.\d+\.[0-9a-f]+\.conf/, '/<conf>'));
  assert.deepEqual(plan, [
    'ip -d -json link show dev flannel-wg',
    'ip link add dev flannel-wg type wireguard',
    'wg syncconf flannel-wg /<conf>',
    'ip -4 -o addr show dev flannel-wg',
    'ip addr add 10.5.1.0/32 dev flannel-wg',
    'ip link set dev flannel-wg mtu 1420 up',
    'ip route replace 10.5.0.0/16 dev flannel-wg scope link',
    'wg syncconf flannel-wg /<conf>',
  ]);
  assert.ok(transcript[2]!.startsWith(`wg syncconf flannel-wg ${dir}/`), 'the file sits beside the key file');
  const conf = wgConfig(key, opts, 51820, [peer]);
  assert.equal(conf, `[Interface]\nPrivateKey = ${key.toString('base64')}\nListenPort = 51820\n\n[Peer]\nPublicKey = ${pub}\nEndpoint = 192.0.2.2:51820\nAllowedIPs = 10.5.2.0/24\nPresharedKey = ${Buffer.alloc(32, 1).toString('base64')}\nPersistentKeepalive = 25\n`);
  const leftovers = (await import('node:fs/promises')).readdir(dir);
  assert.ok(!(await leftovers).some((f) => f.endsWith('.conf')), 'the config file (it holds the key) is removed');
});

test('wg API: get as wireguard-go answers it, set of a peer, the daemon\'s own settings refused, over the socket', async () => {
  const { a, b } = pair(() => 1_700_000_200_000);
  const text = renderGet(a.dev);
  assert.match(text, new RegExp(`^private_key=${a.dev.privateKey().toString('hex')}\nlisten_port=51820\npublic_key=${b.dev.publicKey.toString('hex')}\nprotocol_version=1\nendpoint=192\\.0\\.2\\.2:51820\n`));
  assert.match(text, /allowed_ip=10\.5\.2\.0\/24\nerrno=0\n\n$/);
  assert.equal(applySet(a.dev, [`public_key=${b.dev.publicKey.toString('hex')}`, 'persistent_keepalive_interval=15', 'endpoint=192.0.2.9:4000']), 0);
  assert.match(renderGet(a.dev), /endpoint=192\.0\.2\.9:4000\n[\s\S]*persistent_keepalive_interval=15/);
  assert.equal(applySet(a.dev, ['listen_port=1']), 1);
  assert.equal(applySet(a.dev, [`public_key=${'00'.repeat(32)}`, 'remove=true']), 2);
  assert.equal(applySet(a.dev, ['bogus']), 22);
  const srv = await serveUapi(join(dir, 'uapi'), 'flannel-wg', a.dev);
  const reply = await new Promise<string>((resolve) => {
    const s = connect(srv.path);
    let out = '';
    s.on('data', (d) => (out += d.toString()));
    s.on('end', () => resolve(out));
    s.write('get=1\n\n');
  });
  assert.match(reply, /^private_key=[0-9a-f]{64}\n[\s\S]*errno=0\n\n$/);
  assert.equal((await stat(srv.path)).mode & 0o777, 0o600);
  await srv.close();
});

test('timers: the initiator rekeys after 120 s while still sending; retries every 5 s; gives up after 90 s; passive keepalive after 10 s', () => {
  let t = 1_700_000_300_000;
  const now = () => t;
  const { a, b } = pair(now);
  const handshake = () => {
    a.dev.tick();
    deliver(a, b);
    deliver(b, a);
    deliver(a, b);
    b.dev.tick();
  };
  a.table.wantHandshake(0);
  handshake();
  const first = a.table.current(0);
  assert.notEqual(first, NO_KEYPAIR);
  const initiations = () => readWgCounters(a.counters).initiationsSent;
  assert.equal(initiations(), 1);

  // Data from b, nothing sent back by a for 10 s: a sends a keepalive.
  t += 100;
  send(b, A_ADDR, [ipPacket(100, 1)]);
  deliver(b, a);
  t += 10_500;
  a.dev.tick();
  assert.equal(readWgCounters(a.counters).keepalivesSent, 2, 'the confirming one and the passive one');
  a.outbox.length = 0;

  // 121 s after the handshake a packet still goes out with the old keypair, and a new handshake starts.
  t += 111_000;
  assert.equal(send(a, B_ADDR, [ipPacket(100, 2)]), 1);
  a.outbox.length = 0;
  a.dev.tick();
  assert.equal(initiations(), 2, 'rekey');
  // No answer: retried after REKEY_TIMEOUT (5 s + jitter), not before.
  t += 2000;
  a.dev.tick();
  assert.equal(initiations(), 2);
  t += 4000;
  a.dev.tick();
  assert.equal(initiations(), 3);
  // Still nothing after 90 s of attempts: it gives up (and says so).
  for (let i = 0; i < 20; i++) {
    t += 5500;
    a.dev.tick();
  }
  const given = readWgCounters(a.counters).handshakesFailed;
  assert.ok(given >= 1, 'gave up');
  const sentBefore = initiations();
  t += 5500;
  a.dev.tick();
  assert.equal(initiations(), sentBefore, 'no more retries once given up');
  // The answer that finally comes to a fresh attempt installs a new current keypair.
  a.outbox.length = 0;
  a.table.wantHandshake(0);
  t += 6000;
  handshake();
  assert.notEqual(a.table.current(0), first);
  assert.equal(a.table.previous(0) === first || a.table.previous(0) === NO_KEYPAIR, true);
});

test('protocol timers run on the monotonic clock: a wall clock stepped by hours changes no session (issue 24 item 9)', () => {
  // The default clocks (no `now` given): the device's and both transports'.
  const { a, b } = pair(undefined as unknown as () => number);
  establish(a, b);
  b.dev.tick();
  const realNow = Date.now;
  try {
    for (const step of [-3_600_000, 3_600_000]) {
      Date.now = () => realNow() + step;
      a.dev.tick();
      b.dev.tick();
      assert.equal(send(a, B_ADDR, [ipPacket(200, 2)]), 1, `wall clock stepped by ${step / 1000} s: still sealed`);
      assert.deepEqual(deliver(a, b), [ipPacket(200, 2)]);
    }
  } finally {
    Date.now = realNow;
  }
  assert.equal(readWgCounters(a.counters).dropNoSession, 1, 'only the first packet, before any session');
});

test('a dataplane restart drops every keypair (new workers have empty replay windows); the peers hand-shake again (item 10)', () => {
  let t = 1_700_000_200_000;
  const now = () => t;
  const { a, b } = pair(now);
  establish(a, b);
  assert.equal(send(a, B_ADDR, [ipPacket(100, 2)]), 1);
  const old = a.outbox.splice(0);
  a.dev.dropAllKeypairs();
  assert.equal(a.dev.sessionCount(), 0);
  assert.equal(send(a, B_ADDR, [ipPacket(100, 3)]), 0, 'no keypair: a handshake is wished for');
  t += 6000;
  a.dev.tick();
  assert.equal(a.outbox[0]!.data[0], 1, 'a new initiation');
  // A packet sealed under the dropped keypair is refused by its sender: it never opens there again.
  b.outbox.length = 0;
  const back = new PacketBatch(1, 2048);
  old[0]!.data.copy(back.buf, 0);
  back.lens[0] = old[0]!.data.length;
  back.addrs[0] = B_ADDR;
  back.ports[0] = 51820;
  assert.equal(a.rx.open(back, 1), 0);
});

test('a cookie reply to our handshake response is taken (item 11)', async () => {
  let t = 1_700_000_300_000;
  const now = () => t;
  const { a, b } = pair(now);
  a.table.wantHandshake(0);
  a.dev.tick();
  deliver(a, b);
  const response = b.outbox.find((m) => m.data[0] === 2)!;
  assert.ok(response, 'b answered');
  // a, under load, answers b's response with a cookie reply bound to b's address.
  const { CookieChecker, ipv4Source } = await import('../../src/wireguard/cookie.js');
  const reply = new CookieChecker(a.dev.publicKey).createReply(response.data, ipv4Source(B_ADDR, 51820), t);
  const before = readWgCounters(b.counters).cookieRepliesReceived;
  b.dev.handleHandshake(reply, A_ADDR, 51820);
  assert.equal(readWgCounters(b.counters).cookieRepliesReceived, before + 1);
});

test('under load, mac2-proven initiations are limited per source (wireguard-go\u2019s ratelimiter): one address cannot keep the main thread in X25519 (item 6)', () => {
  let t = 1_700_000_400_000;
  const now = () => t;
  const { a, b } = pair(now);
  // Load from elsewhere, then b asks a for a cookie; a's retries then carry a valid mac2.
  floodThenInitiate(a, b);
  const reply = b.outbox.filter((m) => m.data[0] === 3).pop()!;
  b.outbox.length = 0;
  b.outbox.push(reply);
  deliver(b, a);
  // Many mac2-valid initiations from a's address within one second: only a burst is worked on.
  const before = readWgCounters(b.counters);
  for (let i = 0; i < 30; i++) {
    t += 6;
    a.table.wantHandshake(0);
    a.dev.initiate(a.dev['peers_'].values().next().value!);
    const [m] = a.outbox.splice(0);
    assert.ok(!m!.data.subarray(132, 148).equals(Buffer.alloc(16)), 'mac2 set');
    b.dev.handleHandshake(m!.data, A_ADDR, 51820);
  }
  const after = readWgCounters(b.counters);
  assert.ok(after.dropHandshakeRateLimited - before.dropHandshakeRateLimited >= 20, `limited ${after.dropHandshakeRateLimited - before.dropHandshakeRateLimited}`);
  assert.ok(after.initiationsReceived - before.initiationsReceived <= 10, `worked ${after.initiationsReceived - before.initiationsReceived}`);
});
