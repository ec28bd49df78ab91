// The udp backend's lone-packet hops in C (native/hop.c) against the real
// kernel (root): a TUN device of this test's own in the current namespace
// (as native-tun.test.ts does, 198.18.210-212.x only), the hop's UDP socket
// and a peer socket on 127.0.0.1. What hop.c forwards must be exactly what
// TypeScript's pipeline would forward; everything else it must leave in the
// slots, untouched, for TypeScript: checked packet by packet against
// pipeline.ts's acceptFromUdp / forwardFromTun on the same bytes.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import dgram from 'node:dgram';
import type { HopHandle } from '../../src/native/addon.js';
import { COUNTER_COUNT, UdpCounter } from '../../src/dataplane/counters.js';
import { TunDevice } from '../../src/tun/device.js';
import { UdpSocket } from '../../src/conn/udp-socket.js';
import { PLAIN } from '../../src/dataplane/encapsulation.js';
import { moveWithHop, routing, UdpToTun } from '../../src/dataplane/movers.js';
import { NativeHop } from '../../src/dataplane/native-hop.js';
import type { WorkerConfig } from '../../src/dataplane/workers.js';
import { drainTun, echoRequest, hop, ip, ipv4, jsAccepts, jsForwards, LOCAL, native, onesSum, ping, rig, sendFrom, sh, skip, sleep, SLOT, table, teardown, waitGot, type Rig } from '../helpers/hop-rig.js';

function workerConfig(r: Rig, vnet: boolean): WorkerConfig {
  return {
    role: 'rx',
    queue: 0,
    tunFd: r.tunFd,
    udpFd: r.udpFd,
    routes: r.routes,
    ipv4Pods: true,
    counters: new SharedArrayBuffer(8),
    control: new SharedArrayBuffer(4),
    slotSize: SLOT,
    batchSize: 4,
    pathMtu: 1400,
    pollMs: 10,
    offload: vnet,
    rxCoalesce: false,
    udpGro: true,
    uso: false,
    tunReadLocks: new SharedArrayBuffer(8),
    replyFastPath: false,
    prime: false,
    nativeHop: true,
  };
}

for (const vnet of [false, true]) {
  describe(`hop.c on a TUN device ${vnet ? 'with offloads (virtio_net_hdr)' : 'without offloads'}`, { skip }, () => {
    let r: Rig;
    before(async () => {
      r = await rig(vnet);
    });
    after(() => teardown(r));

    test('rx: a lone datagram pipeline.ts accepts is delivered here, and the answer the kernel queued goes straight to the peer', async () => {
      const h = hop(r, vnet);
      drainTun(r);
      Atomics.store(h.locks, 1, 1); // the tx worker sleeps: the rx side may take its reads
      r.got.length = 0;
      await sendFrom('127.0.0.1', r.udpPort, ipv4('198.18.211.7', LOCAL, 1, echoRequest(0x4242, 1)));
      assert.equal(native.hopRx!(h.handle, 1000), 0);
      assert.equal(h.rx.lens[0], 36);
      assert.equal(h.counters[UdpCounter.received], 1);
      assert.equal(h.counters[UdpCounter.delivered], 1);
      assert.equal(h.counters[UdpCounter.rxBytes], 36);
      assert.equal(h.counters[UdpCounter.txByRxWorker], 1, 'the echo reply was read and sent by the rx side');
      assert.equal(h.counters[UdpCounter.sent], 1);
      assert.equal(Atomics.load(h.locks, 0), 0, 'the read lock is released');
      await waitGot(r, 1);
      assert.equal(r.got.length, 1);
      const reply = r.got[0]!;
      assert.equal(reply[9], 1);
      assert.equal(reply[20], 0, 'an echo reply');
      assert.equal(reply.readUInt16BE(24), 0x4242);
      assert.equal(reply[8], 63, 'TTL decremented');
      assert.equal(onesSum(reply, 0, 20), 0xffff, 'header checksum still right');
      assert.equal(reply.readUInt32BE(16), ip('198.18.211.7'));
    });

    test('rx: with the tx worker awake the answer is left on the queue for it', async () => {
      const h = hop(r, vnet);
      drainTun(r);
      await sendFrom('127.0.0.1', r.udpPort, ipv4('198.18.211.8', LOCAL, 1, echoRequest(7, 2)));
      assert.equal(native.hopRx!(h.handle, 1000), 0);
      assert.equal(h.counters[UdpCounter.delivered], 1);
      assert.equal(h.counters[UdpCounter.txByRxWorker], 0);
      assert.equal(native.tunRead(r.tunFd, h.tx.buf, SLOT, h.tx.lens, 4, 1000, h.hdrs ?? undefined), 1, 'the reply waits in TUN');
    });

    test('rx: every datagram pipeline.ts would drop, and every batch, is left for TypeScript untouched', async () => {
      const h = hop(r, vnet);
      const good = () => ipv4('198.18.211.9', LOCAL, 1, echoRequest(1, 3));
      const cases: { name: string; from?: string; bytes: Buffer }[] = [
        { name: 'spoofed inner source', bytes: ipv4('198.18.9.9', LOCAL, 1, echoRequest(1, 1)) },
        { name: 'unknown peer', from: '127.0.0.2', bytes: good() },
        { name: 'bad header checksum', bytes: ipv4('198.18.211.9', LOCAL, 1, echoRequest(1, 1), { badSum: true }) },
        { name: 'not ours', bytes: ipv4('198.18.211.9', '198.18.211.10', 1, echoRequest(1, 1)) },
        { name: 'multicast', bytes: ipv4('198.18.211.9', '224.0.0.1', 1, echoRequest(1, 1)) },
        { name: 'IPv6', bytes: ipv4('198.18.211.9', LOCAL, 1, echoRequest(1, 1), { version: 6 }) },
        { name: 'total length longer than the datagram', bytes: good().subarray(0, 30) },
        { name: 'too short', bytes: Buffer.from([0x45, 0, 0, 10]) },
        { name: 'trailing bytes', bytes: Buffer.concat([good(), Buffer.alloc(4)]) },
        { name: 'longer than a slot', bytes: Buffer.concat([ipv4('198.18.211.9', LOCAL, 17, Buffer.alloc(SLOT))]) },
      ];
      for (const c of cases) {
        await sendFrom(c.from ?? '127.0.0.1', r.udpPort, c.bytes);
        const before = h.counters.slice();
        assert.equal(native.hopRx!(h.handle, 1000), 1, c.name);
        assert.deepEqual(h.counters, before, `${c.name}: nothing counted here`);
        assert.equal(jsAccepts(r, h), 0, `${c.name}: pipeline.ts drops it too`);
        const n = Math.min(h.rx.lens[0]!, SLOT);
        assert.ok(h.rx.buf.subarray(0, n).equals(c.bytes.subarray(0, n)), `${c.name}: the bytes are as received`);
      }
      // Two datagrams at once: a batch is TypeScript's.
      await sendFrom('127.0.0.1', r.udpPort, good());
      await sendFrom('127.0.0.1', r.udpPort, good());
      assert.equal(native.hopRx!(h.handle, 1000), 2);
      assert.equal(jsAccepts(r, h), 1);
      assert.equal(h.counters[UdpCounter.received], 0);
      drainTun(r);
    });

    test('tx: a lone packet is routed, its TTL and checksums fixed, and sent to the peer as pipeline.ts would', async () => {
      const h = hop(r, vnet);
      drainTun(r);
      r.got.length = 0;
      const s = dgram.createSocket('udp4');
      await new Promise<void>((res) => s.bind(0, LOCAL, res));
      await new Promise<void>((res, rej) => s.send(Buffer.from('lone packet'), 9, '198.18.211.20', (e) => (e ? rej(e) : res())));
      s.close();
      assert.equal(native.hopTx!(h.handle, 1000), 0);
      assert.equal(h.counters[UdpCounter.tunRead], 1);
      assert.equal(h.counters[UdpCounter.sent], 1);
      assert.equal(h.counters[UdpCounter.txBytes], 39);
      assert.equal(Atomics.load(h.locks, 0), 0, 'the read lock is released');
      await waitGot(r, 1);
      const d = r.got[0]!;
      assert.equal(d.length, 39);
      assert.equal(d[8], 63);
      assert.equal(onesSum(d, 0, 20), 0xffff, 'header checksum');
      // The UDP checksum is complete (with offloads the kernel left it partial: hop.c finished it).
      const pseudo = Buffer.alloc(12);
      d.copy(pseudo, 0, 12, 20);
      pseudo[9] = 17;
      pseudo.writeUInt16BE(d.length - 20, 10);
      assert.equal(onesSum(d, 20, d.length, onesSum(pseudo, 0, 12)), 0xffff, 'UDP checksum');
      // The same bytes through pipeline.ts: it forwards them too.
      const back = Buffer.from(d);
      back[8] = 64;
      back.writeUInt16BE(0, 10);
      back.writeUInt16BE(~onesSum(back, 0, 20) & 0xffff, 10);
      assert.equal(jsForwards(r, back, h.spec.pathMtu), 1);
    });

    test('tx: no route, TTL 1, too big with DF, our own subnet, two at once: left for TypeScript, which drops or batches them', async () => {
      const h = hop(r, vnet, { pathMtu: 200 });
      drainTun(r);
      const leftOne = async (name: string, send: () => Promise<void>, jsVerdict: number) => {
        const sent = send();
        const n = native.hopTx!(h.handle, 2000);
        await sent;
        assert.equal(n, 1, name);
        assert.equal(Atomics.load(h.locks, 0), 1, `${name}: handed over with the read lock held`);
        Atomics.store(h.locks, 0, 0);
        const len = h.tx.lens[0]!;
        if (h.hdrs) assert.equal(h.hdrs[1], 0);
        // Checksums the kernel left partial are TypeScript's to finish; compare with that done.
        const pkt = Buffer.from(h.tx.buf.subarray(0, len));
        assert.equal(jsForwards(r, pkt, 200), jsVerdict, `${name}: pipeline.ts's verdict`);
        assert.equal(h.counters[UdpCounter.tunRead], 0, `${name}: nothing counted here`);
        drainTun(r);
      };
      await leftOne('no route', () => ping('198.18.212.5'), 0);
      await leftOne('TTL 1', () => ping('198.18.211.5', ['-t', '1']), 0);
      await leftOne('too big with DF', () => ping('198.18.211.5', ['-M', 'do', '-s', '400']), 0);
      // Our own subnet routed into TUN: a local misroute pipeline.ts counts and drops.
      sh('ip', ['route', 'add', '198.18.210.128/25', 'dev', r.dev]);
      try {
        await leftOne('own subnet', () => ping('198.18.210.200'), 0);
      } finally {
        sh('ip', ['route', 'del', '198.18.210.128/25', 'dev', r.dev]);
      }
      // Two packets queued at once: a batch is TypeScript's (both forwardable).
      const two = dgram.createSocket('udp4');
      await new Promise<void>((res) => two.bind(0, LOCAL, res));
      for (const m of ['one', 'two']) await new Promise<void>((res, rej) => two.send(Buffer.from(m), 9, '198.18.211.21', (e) => (e ? rej(e) : res())));
      two.close();
      assert.equal(native.hopTx!(h.handle, 2000), 2);
      Atomics.store(h.locks, 0, 0);
      assert.equal(h.counters[UdpCounter.tunRead], 0);
      drainTun(r);
      // Without DF, a big packet is sent whole (the kernel fragments the outer datagram): hop.c does it.
      const big = ping('198.18.211.5', ['-M', 'dont', '-s', '400']);
      assert.equal(native.hopTx!(h.handle, 2000), 0);
      await big;
      assert.equal(h.counters[UdpCounter.sent], 1);
    });

    test('tx: a read lock held by the rx worker is respected; route changes are seen at once', async () => {
      const h = hop(r, vnet);
      drainTun(r);
      Atomics.store(h.locks, 0, 1);
      const p = ping('198.18.211.30');
      assert.equal(native.hopTx!(h.handle, 2000), -1, 'readable, but locked');
      await p;
      assert.equal(h.counters[UdpCounter.tunRead], 0);
      Atomics.store(h.locks, 0, 0);
      drainTun(r);
      // Move the remote subnet to another peer port: the next packet goes there.
      const other = dgram.createSocket('udp4');
      await new Promise<void>((res) => other.bind(0, '127.0.0.1', res));
      const got: Buffer[] = [];
      other.on('message', (m) => got.push(m));
      r.writer.publish(table(other.address().port));
      try {
        const q = ping('198.18.211.31');
        assert.equal(native.hopTx!(h.handle, 2000), 0);
        await q;
        for (let i = 0; i < 100 && got.length === 0; i++) await sleep(10);
        assert.equal(got.length, 1, 'sent to the new port');
      } finally {
        r.writer.publish(table(r.peerPort));
        other.close();
      }
      // A table mid-update (odd counter) is not read: the packet is TypeScript's.
      const words = new Uint32Array(r.routes);
      Atomics.add(words, 0, 1);
      try {
        const q = ping('198.18.211.32');
        assert.equal(native.hopTx!(h.handle, 2000), 1);
        await q;
      } finally {
        Atomics.add(words, 0, 1);
        Atomics.store(h.locks, 0, 0);
      }
    });

    test('only a lone packet after quiet hops here: one right after another is left to TypeScript (a stream batches there)', async () => {
      const h = hop(r, vnet, { quietNs: 10e9 });
      drainTun(r);
      const d = () => ipv4('198.18.211.9', LOCAL, 1, echoRequest(9, 9));
      await sendFrom('127.0.0.1', r.udpPort, d());
      assert.equal(native.hopRx!(h.handle, 1000), 0, 'the first (nothing before it)');
      await sendFrom('127.0.0.1', r.udpPort, d());
      assert.equal(native.hopRx!(h.handle, 1000), 1, 'the next one, at once');
      assert.equal(jsAccepts(r, h), 1, 'which pipeline.ts forwards');
      assert.equal(h.counters[UdpCounter.delivered], 1);
      drainTun(r);
    });

    test('the rx loop: datagrams a receive brought beyond one batch are all moved before the next receive, none lost', async () => {
      // A socket with GRO staging (16 slots) and a batch of 4: one receive of 10 datagrams is cut over three moves.
      const cfg = workerConfig(r, vnet);
      const counters = new Float64Array(COUNTER_COUNT);
      const tun = new TunDevice(native, r.tunFd, { offload: vnet, coalesce: false, pollMs: 10 });
      const udp = new UdpSocket(native, r.udpFd, 10, { gro: true });
      const rx = new UdpToTun(native, tun, udp, PLAIN, routing(cfg), counters, cfg);
      const h = new NativeHop(native, cfg, counters, rx.hopSlots(), { wg: null });
      drainTun(r);
      for (let i = 0; i < 10; i++) await sendFrom('127.0.0.1', r.udpPort, ipv4('198.18.211.9', LOCAL, 1, echoRequest(3, i)));
      for (let turns = 0; turns < 50 && counters[UdpCounter.delivered]! < 10; turns++) moveWithHop(rx, h, 20);
      assert.equal(counters[UdpCounter.received], 10);
      assert.equal(counters[UdpCounter.delivered], 10);
      drainTun(r);
    });

    test('a spec that does not fit is refused before any syscall', () => {
      const h = hop(r, vnet);
      assert.throws(() => native.hopCreate!({ ...h.spec, counterIndexes: new Int32Array(3) }), /counterIndexes must have 16 entries/);
      assert.throws(() => native.hopCreate!({ ...h.spec, counterIndexes: new Int32Array(16).fill(COUNTER_COUNT + 1) }), /beyond the counters/);
      assert.throws(() => native.hopCreate!({ ...h.spec, queue: 5 }), /queue 5 has no read lock/);
      assert.throws(() => native.hopCreate!({ ...h.spec, tx: { ...h.spec.tx!, buf: new Uint8Array(10) } }), /tx: buf must hold/);
      assert.throws(() => native.hopRx!(native.hopCreate!({ ...h.spec, rx: null }), 0), /needs a hop created with rx slots/);
      assert.throws(() => native.hopTx!({} as HopHandle, 0), /hopCreate handle/);
    });
  });
}
