// The batched UDP socket's receive offloads and multi-socket steering, on
// loopback (no namespaces): UDP GRO super-datagrams cut back into the
// sender's datagrams, GSO runs that keep to one inner flow, and the
// SO_REUSEPORT group steered by the inner packet's flow.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadNative } from '../../src/native/addon.js';
import { enableUdpGro, UdpSocket } from '../../src/conn/udp-socket.js';
import { PacketBatch } from '../../src/tun/packet-batch.js';

const native = loadNative();
const LOOPBACK = 0x7f000001;
const SLOT = 2048;

/** A bare inner IPv4/UDP packet of `len` bytes from 10.5.1.2:sport to 10.5.2.3:5201, numbered `seq` in its payload. */
function inner(len: number, sport: number, seq: number, proto = 17): Buffer {
  const b = Buffer.alloc(len);
  b[0] = 0x45;
  b.writeUInt16BE(len, 2);
  b[8] = 64;
  b[9] = proto;
  b.set([10, 5, 1, 2], 12);
  b.set([10, 5, 2, 3], 16);
  if (len >= 24) {
    b.writeUInt16BE(sport, 20);
    b.writeUInt16BE(5201, 22);
  }
  if (len >= 32) b.writeUInt32BE(seq, 28);
  return b;
}

function batchOf(pkts: Buffer[], port: number): PacketBatch {
  const b = new PacketBatch(pkts.length, SLOT);
  pkts.forEach((p, i) => {
    p.copy(b.buf, i * SLOT);
    b.lens[i] = p.length;
    b.addrs[i] = LOOPBACK;
    b.ports[i] = port;
  });
  return b;
}

function drain(sock: UdpSocket, capacity: number, want: number) {
  const got: Buffer[] = [];
  const b = new PacketBatch(capacity, SLOT);
  let supers = 0;
  let syscalls = 0;
  const deadline = Date.now() + 3000;
  while (got.length < want && Date.now() < deadline) {
    const n = sock.recv(b);
    supers += sock.recvCounts.superDatagrams;
    syscalls += sock.recvCounts.syscalls;
    for (let i = 0; i < n; i++) got.push(Buffer.from(b.buf.subarray(i * SLOT, i * SLOT + b.lens[i]!)));
  }
  return { got, supers, syscalls };
}

test('UDP GRO: GSO runs arrive as super-datagrams and are cut back into the datagrams sent, in order, across small batches', () => {
  const rx = native.udpOpen('127.0.0.1', 0, false);
  const tx = native.udpOpen('127.0.0.1', 0, false);
  try {
    assert.equal(enableUdpGro(native, rx), true, 'this kernel has UDP_GRO');
    const port = native.udpLocalPort(rx);
    // Two flows, each a run of equal sizes with a shorter last one, then an empty-ish odd one.
    const pkts = [
      ...Array.from({ length: 20 }, (_, i) => inner(i === 19 ? 700 : 1400, 4000, i)),
      ...Array.from({ length: 9 }, (_, i) => inner(300, 4001, 100 + i)),
      inner(20, 4002, 0, 1),
    ];
    const b = batchOf(pkts, port);
    assert.equal(native.udpSend(tx, b.buf, SLOT, b.lens, b.addrs, b.ports, pkts.length, true, true), pkts.length);
    const sock = new UdpSocket(native, rx, 200, { gro: true });
    const { got, supers, syscalls } = drain(sock, 7, pkts.length);
    assert.equal(got.length, pkts.length);
    got.forEach((g, i) => assert.deepEqual(g, pkts[i], `datagram ${i} byte for byte`));
    assert.ok(supers >= 2, `super-datagrams seen: ${supers}`);
    assert.ok(syscalls <= 3, `few recvmmsg calls for 30 datagrams: ${syscalls}`);
  } finally {
    native.close(rx);
    native.close(tx);
  }
});

test('flowRuns: a GSO run never mixes inner flows, so a GRO receiver sees one flow per super-datagram', () => {
  const rx = native.udpOpen('127.0.0.1', 0, false);
  const tx = native.udpOpen('127.0.0.1', 0, false);
  try {
    enableUdpGro(native, rx);
    const port = native.udpLocalPort(rx);
    // Interleaved flows of one size: without flowRuns these would be one run.
    const pkts = Array.from({ length: 24 }, (_, i) => inner(1000, 5000 + (Math.floor(i / 6) % 2), i));
    const b = batchOf(pkts, port);
    assert.equal(native.udpSend(tx, b.buf, SLOT, b.lens, b.addrs, b.ports, pkts.length, true, true), pkts.length);
    const staging = new PacketBatch(16, 65536);
    const gso = new Uint16Array(16);
    const seen: number[] = [];
    const deadline = Date.now() + 2000;
    let total = 0;
    while (total < pkts.length * 1000 && Date.now() < deadline) {
      const n = native.udpRecv(rx, staging.buf, 65536, staging.lens, staging.addrs, staging.ports, 16, 200, gso);
      for (let i = 0; i < n; i++) {
        const len = staging.lens[i]!;
        total += len;
        const seg = gso[i] || len;
        const sports = new Set<number>();
        for (let at = 0; at < len; at += seg) sports.add(staging.buf.readUInt16BE(i * 65536 + at + 20));
        assert.equal(sports.size, 1, 'one inner flow per super-datagram');
        seen.push(len / seg);
      }
    }
    assert.equal(total, pkts.length * 1000);
    assert.deepEqual(seen, [6, 6, 6, 6], 'each run of one flow stays one super-datagram');
  } finally {
    native.close(rx);
    native.close(tx);
  }
});

test('udpSteerByInnerFlow: each inner flow is read by one socket of the group, flows spread, garbage goes to the first', () => {
  const N = 3;
  const first = native.udpOpen('127.0.0.1', 0, true);
  const port = native.udpLocalPort(first);
  const fds = [first, ...Array.from({ length: N - 1 }, () => native.udpOpen('127.0.0.1', port, true))];
  const tx = native.udpOpen('127.0.0.1', 0, false);
  try {
    native.udpSteerByInnerFlow!(first, N);
    const flows = 24;
    const per = 5;
    const pkts: Buffer[] = [];
    for (let k = 0; k < per; k++) for (let f = 0; f < flows; f++) pkts.push(inner(200, 20000 + f * 7, k, f % 3 === 0 ? 6 : 17));
    pkts.push(Buffer.from([1, 2, 3])); // too short for the program's loads
    const b = batchOf(pkts, port);
    assert.equal(native.udpSend(tx, b.buf, SLOT, b.lens, b.addrs, b.ports, pkts.length, false), pkts.length);
    const bySocket = fds.map((fd) => drain(new UdpSocket(native, fd, 100), 256, pkts.length).got);
    assert.equal(
      bySocket.reduce((a, g) => a + g.length, 0),
      pkts.length,
      'every datagram was received once',
    );
    const owner = new Map<number, number>();
    bySocket.forEach((got, s) => {
      for (const g of got) {
        if (g.length < 20) {
          assert.equal(s, 0, 'a datagram the program cannot read goes to the first socket');
          continue;
        }
        const sport = g.readUInt16BE(20);
        assert.equal(owner.get(sport) ?? s, s, `flow ${sport} stays on one socket`);
        owner.set(sport, s);
      }
      // In order per flow.
      const last = new Map<number, number>();
      for (const g of got.filter((x) => x.length >= 32)) {
        const sport = g.readUInt16BE(20);
        const seq = g.readUInt32BE(28);
        assert.ok(seq > (last.get(sport) ?? -1), `flow ${sport} in order`);
        last.set(sport, seq);
      }
    });
    assert.equal(new Set(owner.values()).size, N, `${flows} flows spread over all ${N} sockets`);
    assert.throws(() => native.udpSteerByInnerFlow!(first, 0), RangeError);
  } finally {
    for (const fd of [...fds, tx]) native.close(fd);
  }
});

test('datagrams the kernel dropped for a full socket buffer are reported (SO_RXQ_OVFL)', () => {
  const rx = native.udpOpen('127.0.0.1', 0, false);
  const tx = native.udpOpen('127.0.0.1', 0, false);
  try {
    const port = native.udpLocalPort(rx);
    const pkts = Array.from({ length: 1024 }, (_, i) => inner(1400, 6000, i));
    const b = batchOf(pkts, port);
    // 8 x 1024 x 1400 B = 11 MB into a 4 MiB receive buffer that nobody reads meanwhile.
    for (let k = 0; k < 8; k++) native.udpSend(tx, b.buf, SLOT, b.lens, b.addrs, b.ports, pkts.length, false);
    const sock = new UdpSocket(native, rx, 100);
    const { got } = drain(sock, 256, 8 * 1024);
    assert.ok(got.length < 8 * 1024, `some were dropped (${got.length} received)`);
    // The kernel stamps its running count on datagrams queued after the drops: send one more.
    native.udpSend(tx, b.buf, SLOT, b.lens, b.addrs, b.ports, 1, false);
    drain(sock, 256, 1);
    assert.equal(sock.drops[0], 8 * 1024 - got.length, 'every datagram not received was counted as a drop');
  } finally {
    native.close(rx);
    native.close(tx);
  }
});

test('a port held by a SO_REUSEPORT group refuses a plain bind, and a port held plainly refuses the group (how a second flanneld is caught)', () => {
  const first = native.udpOpen('127.0.0.1', 0, true);
  const port = native.udpLocalPort(first);
  const second = native.udpOpen('127.0.0.1', port, true);
  try {
    assert.throws(() => native.udpOpen('127.0.0.1', port, false), (e: NodeJS.ErrnoException) => e.code === 'EADDRINUSE');
  } finally {
    native.close(first);
    native.close(second);
  }
  const plain = native.udpOpen('127.0.0.1', 0, false);
  try {
    assert.throws(() => native.udpOpen('127.0.0.1', native.udpLocalPort(plain), false), (e: NodeJS.ErrnoException) => e.code === 'EADDRINUSE');
    assert.throws(() => native.udpOpen('127.0.0.1', native.udpLocalPort(plain), true), (e: NodeJS.ErrnoException) => e.code === 'EADDRINUSE');
  } finally {
    native.close(plain);
  }
});
