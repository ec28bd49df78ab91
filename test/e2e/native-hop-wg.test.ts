// WireGuard's transport in the lone-packet hops (native/hop_wg.c), on a real
// TUN device (test/helpers/hop-rig.ts) with a peer table holding one peer
// and one keypair, as the main thread writes them: transport messages the
// peer seals are opened and delivered, answers sealed to the peer's
// endpoint; replayed counters are refused whichever of hop_wg.c and
// transport.ts saw them first (one set of windows); what cannot be opened
// here (a handshake, an unknown receiver) is left to transport.ts untouched,
// and what was opened is counted as transport.ts counts it.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { UdpCounter } from '../../src/dataplane/counters.js';
import { PacketBatch } from '../../src/tun/packet-batch.js';
import { createPeerTableBuffers, PeerTable, SentBytesBy } from '../../src/wireguard/peer-table.js';
import { WireGuardTransport } from '../../src/wireguard/transport.js';
import { createWgCounterBuffer, WgCounter, wgCounterRegion, WG_REGION_RX } from '../../src/wireguard/counters.js';
import { monotonicMs } from '../../src/wireguard/clock.js';
import { REKEY_AFTER_TIME } from '../../src/wireguard/messages.js';
import { drainTun, echoRequest, hop, ip, ipv4, LOCAL, native, onesSum, ping, REMOTE, rig, skip, sleep, SLOT, teardown, waitGot, type Hop, type Rig } from '../helpers/hop-rig.js';

const PEER = 1;
const KEYPAIR = 3;
const LOCAL_INDEX = ((0x5a5a << 16) | KEYPAIR) >>> 0;
const REMOTE_INDEX = 0x01020304;

interface Wg {
  table: PeerTable;
  transport: WireGuardTransport;
  stats: Float64Array;
  /** Keys as we use them: we seal with send, open with recv; the peer the other way round. */
  send: Uint8Array;
  recv: Uint8Array;
}

function wgState(r: Rig, o: { initiator?: boolean; ageMs?: number } = {}): Wg {
  const buffers = createPeerTableBuffers(16, 4);
  const table = new PeerTable(buffers);
  const send = new Uint8Array(randomBytes(32));
  const recv = new Uint8Array(randomBytes(32));
  table.setPeer(PEER, ip('127.0.0.1'), r.peerPort, true);
  table.writeKeypair(KEYPAIR, PEER, LOCAL_INDEX, REMOTE_INDEX, send, recv, o.initiator ?? true, monotonicMs() - (o.ageMs ?? 0));
  table.setKeypairs(PEER, KEYPAIR, -1, -1);
  const counters = createWgCounterBuffer();
  const stats = wgCounterRegion(counters, WG_REGION_RX);
  const transport = new WireGuardTransport(native, { table: buffers, counters, publicKey: new Uint8Array(32), mtu: 1420 }, stats, () => {}, monotonicMs, 64, SentBytesBy.RxWorker);
  // The route names the peer by its slot, as the wireguard backend's routes do.
  r.writer.publish({ ownNet: ip('198.18.210.0'), ownPrefixLen: 24, network: ip('198.18.208.0'), networkPrefixLen: 20, icmpSource: ip(LOCAL), routes: [{ net: ip(REMOTE), prefixLen: 24, peer: PEER, port: 0 }] });
  return { table, transport, stats, send, recv };
}

/** A transport message the peer would send us: `inner` sealed under our receive key with `counter`. */
function sealedByPeer(w: Wg, inner: Buffer, counter: number, key = w.recv): Buffer {
  const b = new PacketBatch(1, SLOT);
  inner.copy(b.buf);
  b.lens[0] = inner.length;
  native.wgSeal(b.buf, SLOT, b.lens, 1, key, new Uint32Array([0]), new Uint32Array([LOCAL_INDEX]), new BigUint64Array([BigInt(counter)]), 1420);
  return Buffer.from(b.buf.subarray(0, b.lens[0]!));
}

/** What the peer reads out of a datagram we sealed: the inner packet (without padding), or null. */
function openedByPeer(w: Wg, d: Buffer): Buffer | null {
  const b = new PacketBatch(1, SLOT);
  d.copy(b.buf);
  b.lens[0] = d.length;
  if (native.wgOpen(b.buf, SLOT, b.lens, 1, w.send, new Uint32Array([0])) !== 1) return null;
  const inner = b.buf.subarray(0, b.lens[0]!);
  return Buffer.from(inner.subarray(0, inner.readUInt16BE(2)));
}

/** Sent from the peer's own socket, its endpoint in the table (any other source port is roaming). */
function fromPeer(r: Rig, d: Buffer): Promise<void> {
  return new Promise((res, rej) => r.peer.send(d, r.udpPort, '127.0.0.1', (e) => (e ? rej(e) : res())));
}

/** transport.ts open of one datagram as the rx worker's TypeScript would run it: the packets it keeps. */
function jsOpens(w: Wg, d: Buffer): number {
  const b = new PacketBatch(1, SLOT);
  d.copy(b.buf);
  b.lens[0] = d.length;
  b.addrs[0] = ip('127.0.0.1');
  b.ports[0] = w.table.endpointPort(PEER);
  return w.transport.open(b, 1);
}

describe('hop_wg.c: WireGuard transport messages in the lone-packet hops', { skip }, () => {
  let r: Rig;
  before(async () => {
    r = await rig(false, 'wg');
  });
  after(() => teardown(r));

  const rxHop = (w: Wg): Hop => hop(r, false, { wg: w.transport.nativeHop()! });

  test('a sealed echo request is opened and delivered; the kernel\'s reply is sealed to the peer\'s endpoint', async () => {
    const w = wgState(r);
    const h = rxHop(w);
    drainTun(r);
    Atomics.store(h.locks, 1, 1);
    r.got.length = 0;
    await fromPeer(r, sealedByPeer(w, ipv4('198.18.211.7', LOCAL, 1, echoRequest(0x77, 1)), 0));
    assert.equal(native.hopRx!(h.handle, 1000), 0);
    assert.equal(w.stats[WgCounter.opened], 1);
    assert.equal(h.counters[UdpCounter.delivered], 1);
    assert.equal(h.counters[UdpCounter.received], 1);
    assert.equal(h.counters[UdpCounter.rxBytes], 36, 'the inner packet, without padding');
    assert.ok(w.table.lastDataReceived(PEER) > 0);
    assert.equal(w.table.rxBytes(PEER), 48 + 32, 'padded plaintext and overhead, as transport.ts counts them');
    assert.equal(w.stats[WgCounter.sealed], 1, 'the echo reply sealed by the rx side');
    assert.equal(h.counters[UdpCounter.txByRxWorker], 1);
    assert.equal(w.table.counterOf(KEYPAIR), 1, 'one send counter taken');
    assert.ok(w.table.txBytes(PEER) > 0);
    await waitGot(r, 1);
    const reply = openedByPeer(w, r.got[0]!);
    assert.ok(reply, 'the peer opens it with its key');
    assert.equal(reply[20], 0, 'an echo reply');
    assert.equal(reply.readUInt16BE(24), 0x77);
    assert.equal(reply[8], 63);
    assert.equal(onesSum(reply, 0, 20), 0xffff);
    assert.equal(r.got[0]!.readUInt32LE(4), REMOTE_INDEX, 'addressed to the peer\'s receiver index');
  });

  test('a replayed counter is refused whichever side saw it first: hop_wg.c and transport.ts share the windows', async () => {
    const w = wgState(r);
    const h = rxHop(w);
    drainTun(r);
    const inner = () => ipv4('198.18.211.7', LOCAL, 1, echoRequest(1, 2));
    const seven = sealedByPeer(w, inner(), 7);
    await fromPeer(r, seven);
    assert.equal(native.hopRx!(h.handle, 1000), 0);
    assert.equal(h.counters[UdpCounter.delivered], 1);
    await fromPeer(r, seven);
    assert.equal(native.hopRx!(h.handle, 1000), 0);
    assert.equal(w.stats[WgCounter.dropReplay], 1, 'the same datagram again, here');
    assert.equal(jsOpens(w, seven), 0);
    assert.equal(w.stats[WgCounter.dropReplay], 2, 'and in transport.ts');
    const eight = sealedByPeer(w, inner(), 8);
    assert.equal(jsOpens(w, eight), 1, 'transport.ts takes 8');
    await fromPeer(r, eight);
    assert.equal(native.hopRx!(h.handle, 1000), 0);
    assert.equal(w.stats[WgCounter.dropReplay], 3, '8 again, here');
    // Far ahead, then one that fell out of the 2048-counter window.
    await fromPeer(r, sealedByPeer(w, inner(), 5000));
    assert.equal(native.hopRx!(h.handle, 1000), 0);
    await fromPeer(r, sealedByPeer(w, inner(), 9));
    assert.equal(native.hopRx!(h.handle, 1000), 0);
    assert.equal(w.stats[WgCounter.dropReplay], 4);
    assert.equal(h.counters[UdpCounter.delivered], 2);
    // The same slot written with a new keypair starts a new window.
    w.table.clearKeypair(KEYPAIR);
    w.table.writeKeypair(KEYPAIR, PEER, LOCAL_INDEX, REMOTE_INDEX, w.send, w.recv, true, monotonicMs());
    await fromPeer(r, sealedByPeer(w, inner(), 7));
    assert.equal(native.hopRx!(h.handle, 1000), 0);
    assert.equal(h.counters[UdpCounter.delivered], 3);
    drainTun(r);
  });

  test('keepalives, forged tags, spoofed inner sources and a new source port: consumed and counted as transport.ts counts them', async () => {
    const w = wgState(r);
    const h = rxHop(w);
    drainTun(r);
    await fromPeer(r, sealedByPeer(w, Buffer.alloc(0), 1));
    assert.equal(native.hopRx!(h.handle, 1000), 0);
    assert.equal(w.stats[WgCounter.keepalivesReceived], 1);
    assert.equal(h.counters[UdpCounter.received], 0);
    const forged = sealedByPeer(w, ipv4('198.18.211.7', LOCAL, 1, echoRequest(1, 3)), 2);
    forged[20] ^= 1;
    await fromPeer(r, forged);
    assert.equal(native.hopRx!(h.handle, 1000), 0);
    assert.equal(w.stats[WgCounter.dropBadMac], 1);
    await fromPeer(r, sealedByPeer(w, ipv4('198.18.9.9', LOCAL, 1, echoRequest(1, 4)), 3));
    assert.equal(native.hopRx!(h.handle, 1000), 0);
    assert.equal(h.counters[UdpCounter.rxSpoofed], 1, 'a source outside the key\'s allowed IPs');
    await fromPeer(r, sealedByPeer(w, ipv4('198.18.211.7', '198.18.211.9', 1, echoRequest(1, 5)), 4));
    assert.equal(native.hopRx!(h.handle, 1000), 0);
    assert.equal(h.counters[UdpCounter.rxNotLocal], 1);
    assert.equal(h.counters[UdpCounter.delivered], 0);
    // Roaming: the peer's endpoint follows its last authenticated packet.
    const moved = dgram.createSocket('udp4');
    await new Promise<void>((res) => moved.bind(0, '127.0.0.1', res));
    await new Promise<void>((res, rej) => moved.send(sealedByPeer(w, ipv4('198.18.211.7', LOCAL, 1, echoRequest(1, 6)), 5), r.udpPort, '127.0.0.1', (e) => (e ? rej(e) : res())));
    assert.equal(native.hopRx!(h.handle, 1000), 0);
    assert.equal(w.table.endpointPort(PEER), moved.address().port);
    assert.equal(w.stats[WgCounter.roamed], 1);
    moved.close();
    drainTun(r);
  });

  test('a hop that opens needs replay windows for every keypair; one that only seals does not', () => {
    const w = wgState(r);
    const h = rxHop(w);
    const wg = w.transport.nativeHop()!;
    const small = { ...wg, replayBits: new Uint32Array(0), replayTop: new Float64Array(0), replayGen: new Int32Array(0) };
    assert.throws(() => native.hopCreate!({ ...h.spec, wg: small }), /replay windows/);
    assert.ok(native.hopCreate!({ ...h.spec, rx: null, wg: small }), 'a sender without windows');
    assert.throws(() => native.hopCreate!({ ...h.spec, wg: { ...wg, layout: new Int32Array(3) } }), /wg.layout must have/);
  });

  test('a handshake message or an unknown receiver index is left to transport.ts untouched', async () => {
    const w = wgState(r);
    const h = rxHop(w);
    const initiation = Buffer.alloc(148);
    initiation[0] = 1;
    const stranger = sealedByPeer(w, ipv4('198.18.211.7', LOCAL, 1, echoRequest(1, 7)), 1);
    stranger.writeUInt32LE(LOCAL_INDEX ^ 0x10000, 4);
    for (const d of [initiation, stranger]) {
      await fromPeer(r, d);
      const stats = w.stats.slice();
      assert.equal(native.hopRx!(h.handle, 1000), 1);
      assert.ok(h.rx.buf.subarray(0, d.length).equals(d), 'as received');
      assert.deepEqual(w.stats, stats, 'nothing counted here');
    }
  });

  test('tx: a lone packet is sealed under the current keypair; without one it is left to transport.ts; an old keypair asks for a handshake', async () => {
    const w = wgState(r, { ageMs: REKEY_AFTER_TIME + 1000 });
    const h = hop(r, false, { wg: w.transport.nativeHop()! });
    drainTun(r);
    r.got.length = 0;
    const p = ping('198.18.211.40');
    assert.equal(native.hopTx!(h.handle, 2000), 0);
    await p;
    await waitGot(r, 1);
    const inner = openedByPeer(w, r.got[0]!);
    assert.ok(inner);
    assert.equal(inner.readUInt32BE(16), ip('198.18.211.40'));
    assert.equal(inner[8], 63);
    assert.equal(h.counters[UdpCounter.sent], 1);
    assert.equal(h.counters[UdpCounter.txBytes], r.got[0]!.length);
    assert.equal(w.table.takeHandshakeWish(PEER), true, 'REKEY_AFTER_TIME passed: a new handshake is wanted');
    // No keypair: transport.ts's to count (no_session) and to ask for one.
    w.table.setKeypairs(PEER, -1, -1, -1);
    const q = ping('198.18.211.41');
    assert.equal(native.hopTx!(h.handle, 2000), 1);
    await q;
    assert.equal(w.table.counterOf(KEYPAIR), 1, 'no counter taken for it');
    assert.equal(h.tx.buf.readUInt32BE(16), ip('198.18.211.41'), 'the packet as read');
    Atomics.store(h.locks, 0, 0);
    await sleep(10);
  });
});
