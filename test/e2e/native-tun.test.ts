// End-to-end test of the addon's TUN half against the real kernel (root).
// A TUN fd belongs to the namespace of the process that opens it, so the
// devices are created here in the current namespace under unique names
// (ftst<pid>, ftsq<pid>) with 198.18.x benchmark addresses only, and are
// deleted in `finally`. No traffic leaves the test devices.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import dgram from 'node:dgram';
import { once } from 'node:events';
import { loadNative, type NativeAddon } from '../../src/native/addon.js';

const native: NativeAddon = loadNative();
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
const skip = !isRoot ? 'needs root' : !existsSync('/dev/net/tun') ? 'no /dev/net/tun' : false;
const suffix = String(process.pid % 10000);

function sh(cmd: string, args: string[], ignoreErrors = false): void {
  try {
    execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (err) {
    if (!ignoreErrors) throw err;
  }
}

/** Brings a TUN device up with a local /32 and a route into it. */
function configure(dev: string, local: string, route: string): void {
  // No IPv6 on the device: keeps router solicitations out of what we read.
  sh('sysctl', ['-qw', `net.ipv6.conf.${dev}.disable_ipv6=1`], true);
  sh('sysctl', ['-qw', `net.ipv4.conf.${dev}.rp_filter=0`], true);
  sh('sysctl', ['-qw', `net.ipv4.conf.${dev}.accept_local=1`], true);
  sh('ip', ['addr', 'add', `${local}/32`, 'dev', dev]);
  sh('ip', ['link', 'set', dev, 'up']);
  sh('ip', ['route', 'add', route, 'dev', dev]);
}

const ipBytes = (ip: string) => ip.split('.').map(Number);
const ipAt = (b: Buffer, off: number) => `${b[off]}.${b[off + 1]}.${b[off + 2]}.${b[off + 3]}`;

function csum(buf: Buffer, initial = 0): number {
  let sum = initial;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2) sum += buf[buf.length - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** An IPv4/UDP packet with valid IP and UDP checksums. */
function udpPacket(src: string, sport: number, dst: string, dport: number, payload: Buffer): Buffer {
  const udpLen = 8 + payload.length;
  const pkt = Buffer.alloc(20 + udpLen);
  pkt[0] = 0x45;
  pkt.writeUInt16BE(pkt.length, 2);
  pkt.writeUInt16BE(0x1234, 4); // id
  pkt.writeUInt16BE(0x4000, 6); // DF
  pkt[8] = 64; // TTL
  pkt[9] = 17; // UDP
  Buffer.from(ipBytes(src)).copy(pkt, 12);
  Buffer.from(ipBytes(dst)).copy(pkt, 16);
  pkt.writeUInt16BE(csum(pkt.subarray(0, 20)), 10);
  pkt.writeUInt16BE(sport, 20);
  pkt.writeUInt16BE(dport, 22);
  pkt.writeUInt16BE(udpLen, 24);
  payload.copy(pkt, 28);
  const pseudo = Buffer.alloc(12);
  pkt.copy(pseudo, 0, 12, 20);
  pseudo[9] = 17;
  pseudo.writeUInt16BE(udpLen, 10);
  let c = csum(Buffer.concat([pseudo, pkt.subarray(20)]));
  if (c === 0) c = 0xffff;
  pkt.writeUInt16BE(c, 26);
  return pkt;
}

interface Packet {
  data: Buffer;
  len: number;
}

/** tunRead on each fd until `accept` has taken `want` packets or 3 s pass. */
function readUntil(fds: number[], slotSize: number, want: number, accept: (p: Packet, fd: number) => boolean): Packet[] {
  const max = 16;
  const buf = Buffer.alloc(slotSize * max);
  const lens = new Uint32Array(max);
  const out: Packet[] = [];
  const deadline = Date.now() + 3000;
  while (out.length < want && Date.now() < deadline) {
    for (const fd of fds) {
      const n = native.tunRead(fd, buf, slotSize, lens, max, 50);
      for (let i = 0; i < n; i++) {
        const len = lens[i]!;
        const p = { data: Buffer.from(buf.subarray(i * slotSize, i * slotSize + Math.min(len, slotSize))), len };
        if (accept(p, fd)) out.push(p);
      }
    }
  }
  return out;
}

async function sendUdp(dst: string, port: number, payload: Buffer, bindPort = 0): Promise<number> {
  const s = dgram.createSocket('udp4');
  try {
    await new Promise<void>((resolve) => s.bind(bindPort, resolve));
    await new Promise<void>((resolve, reject) => s.send(payload, 0, payload.length, port, dst, (err) => (err ? reject(err) : resolve())));
    return s.address().port;
  } finally {
    s.close();
  }
}

const isUdpTo = (dst: string, dport: number) => (p: Packet) =>
  p.len >= 28 && p.data[0]! >> 4 === 4 && p.data[9] === 17 && ipAt(p.data, 16) === dst && p.data.readUInt16BE(22) === dport;

test('single-queue TUN: read what the kernel routes in, write packets the kernel delivers, EBUSY on reuse', { skip }, async () => {
  const dev = `ftst${suffix}`;
  const fds: number[] = [];
  const rx = dgram.createSocket('udp4');
  try {
    const t = native.tunOpen(dev, false);
    fds.push(t.fd);
    assert.equal(t.name, dev);
    assert.ok(t.fd >= 0);
    configure(dev, '198.18.99.1', '198.18.100.0/24');

    // Opening the same device again without multi-queue: EBUSY with a hint.
    assert.throws(
      () => native.tunOpen(dev, false),
      (err: NodeJS.ErrnoException) =>
        err.code === 'EBUSY' && err.syscall === 'ioctl' && err.message.includes(`TUNSETIFF ${dev}: EBUSY (device already in use`),
    );
    // ... and with multi-queue the flags mismatch: EINVAL telling how to fix it.
    assert.throws(() => native.tunOpen(dev, true), (err: NodeJS.ErrnoException) => err.code === 'EINVAL' && err.message.includes('ip link del'));

    // Kernel -> TUN: a datagram routed into the device comes out of tunRead.
    const payload = Buffer.from('hello through the tun device');
    const sport = await sendUdp('198.18.100.5', 9999, payload);
    const got = readUntil([t.fd], 2048, 1, isUdpTo('198.18.100.5', 9999));
    assert.equal(got.length, 1, 'IPv4 packet to 198.18.100.5 read from the TUN');
    const p = got[0]!;
    assert.equal(p.len, 28 + payload.length);
    assert.equal(p.data.readUInt16BE(2), p.len, 'IP total length matches the read length');
    assert.equal(ipAt(p.data, 12), '198.18.99.1', 'source is the device address');
    assert.equal(p.data.readUInt16BE(20), sport);
    assert.deepEqual(p.data.subarray(28), payload);

    // tunRead with nothing queued times out with 0.
    const t0 = Date.now();
    assert.equal(native.tunRead(t.fd, Buffer.alloc(2048), 2048, new Uint32Array(1), 1, 100), 0);
    assert.ok(Date.now() - t0 >= 80);

    // A packet bigger than the slot is reported as slotSize + 1.
    await sendUdp('198.18.100.6', 9998, Buffer.alloc(300, 7));
    const big = readUntil([t.fd], 128, 1, (q) => q.len === 129 && ipAt(q.data, 16) === '198.18.100.6');
    assert.equal(big.length, 1, 'oversized packet flagged as slotSize + 1');

    // TUN -> kernel: a crafted packet written to the device reaches a socket.
    await new Promise<void>((resolve) => rx.bind(0, '198.18.99.1', resolve));
    const rxPort = rx.address().port;
    const msg = once(rx, 'message') as Promise<[Buffer, dgram.RemoteInfo]>;
    const pkts = [
      udpPacket('198.18.100.5', 4242, '198.18.99.1', rxPort, Buffer.from('from the tun, 1')),
      udpPacket('198.18.100.5', 4242, '198.18.99.1', rxPort, Buffer.from('from the tun, 2')),
    ];
    const slot = 256;
    const wbuf = Buffer.alloc(slot * pkts.length);
    const wlens = new Uint32Array(pkts.length);
    pkts.forEach((k, i) => {
      k.copy(wbuf, i * slot);
      wlens[i] = k.length;
    });
    assert.equal(native.tunWrite(t.fd, wbuf, slot, wlens, pkts.length), 2);
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no datagram from the TUN within 3 s')), 3000).unref());
    const [data, rinfo] = await Promise.race([msg, timeout]);
    assert.equal(data.toString(), 'from the tun, 1');
    assert.equal(rinfo.address, '198.18.100.5');
    assert.equal(rinfo.port, 4242);
  } finally {
    rx.close();
    for (const fd of fds) native.close(fd);
    sh('ip', ['link', 'del', dev], true);
  }
});

test('multi-queue TUN: two queues on one device both carry traffic', { skip }, async () => {
  const dev = `ftsq${suffix}`;
  const fds: number[] = [];
  const rx = dgram.createSocket('udp4');
  try {
    const q1 = native.tunOpen(dev, true);
    fds.push(q1.fd);
    const q2 = native.tunOpen(dev, true);
    fds.push(q2.fd);
    assert.equal(q1.name, dev);
    assert.equal(q2.name, dev);
    assert.notEqual(q1.fd, q2.fd);
    // Single-queue open of a multi-queue device: flags mismatch.
    assert.throws(() => native.tunOpen(dev, false), (err: NodeJS.ErrnoException) => err.code === 'EINVAL');
    configure(dev, '198.18.101.1', '198.18.102.0/24');

    // Many flows (distinct source ports) spread over the queues; whichever
    // queue the kernel picks, every packet must come out exactly once.
    const flows = 24;
    for (let i = 0; i < flows; i++) await sendUdp('198.18.102.7', 7000, Buffer.from(`flow ${i}`));
    const got = readUntil([q1.fd, q2.fd], 2048, flows, isUdpTo('198.18.102.7', 7000));
    assert.equal(got.length, flows);
    assert.deepEqual(new Set(got.map((p) => p.data.subarray(28).toString())).size, flows);

    // Both queues accept writes.
    await new Promise<void>((resolve) => rx.bind(0, '198.18.101.1', resolve));
    const rxPort = rx.address().port;
    const seen = new Set<string>();
    const both = new Promise<void>((resolve) =>
      rx.on('message', (m) => {
        seen.add(m.toString());
        if (seen.size === 2) resolve();
      }),
    );
    for (const [i, q] of [q1, q2].entries()) {
      const pkt = udpPacket('198.18.102.9', 5000 + i, '198.18.101.1', rxPort, Buffer.from(`queue ${i + 1}`));
      assert.equal(native.tunWrite(q.fd, pkt, pkt.length, new Uint32Array([pkt.length]), 1), 1);
    }
    const timeout = new Promise<never>((_, reject) => setTimeout(() => reject(new Error(`only got ${[...seen]}`)), 3000).unref());
    await Promise.race([both, timeout]);
    assert.deepEqual([...seen].sort(), ['queue 1', 'queue 2']);
  } finally {
    rx.close();
    for (const fd of fds) native.close(fd);
    sh('ip', ['link', 'del', dev], true);
  }
});

test('tunWrite on a closed fd throws EBADF; a deleted device reports EBADFD', { skip }, () => {
  const dev = `ftsd${suffix}`;
  let fd = -1;
  try {
    fd = native.tunOpen(dev, false).fd;
    sh('ip', ['link', 'del', dev]);
    // The fd is now detached from any device: reads and writes must throw,
    // not hang or crash.
    const pkt = udpPacket('198.18.100.5', 1, '198.18.99.1', 2, Buffer.from('x'));
    assert.throws(() => native.tunWrite(fd, pkt, pkt.length, new Uint32Array([pkt.length]), 1), (err: NodeJS.ErrnoException) => err.code === 'EBADFD');
    assert.throws(() => native.tunRead(fd, Buffer.alloc(2048), 2048, new Uint32Array(1), 1, 10), (err: NodeJS.ErrnoException) => err.code === 'EBADFD');
  } finally {
    if (fd >= 0) native.close(fd);
    sh('ip', ['link', 'del', dev], true);
  }
  assert.throws(() => native.tunWrite(fd, Buffer.alloc(64), 64, new Uint32Array([20]), 1), (err: NodeJS.ErrnoException) => err.code === 'EBADF');
});

/**
 * Send `rounds` packets of each of `flows` UDP flows (fixed source ports)
 * through a two-queue device, writing between rounds a packet of each
 * flow's reverse flow on the queue it did not use; returns, per flow, the
 * queues (0, 1) its packets were read from, round by round.
 */
async function queuesPerFlow(dev: string, steer: boolean, net: number): Promise<number[][][]> {
  const fds: number[] = [];
  try {
    const q1 = native.tunOpen(dev, true);
    fds.push(q1.fd);
    fds.push(native.tunOpen(dev, true).fd);
    if (steer) native.tunSteerByInnerFlow!(q1.fd);
    const local = `198.18.${net}.1`;
    const remote = `198.18.${net + 1}.7`;
    configure(dev, local, `198.18.${net + 1}.0/24`);
    const flows = 8;
    const perFlow: number[][][] = Array.from({ length: flows }, () => []);
    for (let round = 0; round < 2; round++) {
      for (let k = 0; k < 3; k++) for (let f = 0; f < flows; f++) await sendUdp(remote, 7100, Buffer.from(`flow ${f}`), 41000 + f);
      const seen: number[][] = Array.from({ length: flows }, () => []);
      const got = readUntil(fds, 2048, flows * 3, (p, fd) => {
        if (!isUdpTo(remote, 7100)(p)) return false;
        seen[p.data.readUInt16BE(20) - 41000]?.push(fds.indexOf(fd));
        return true;
      });
      assert.equal(got.length, flows * 3, `round ${round}: every packet read once`);
      seen.forEach((qs, f) => perFlow[f]!.push(qs));
      // The reverse flow written on the other queue: what the kernel's automatic choice learns from.
      for (let f = 0; f < flows; f++) {
        const other = 1 - seen[f]![0]!;
        const pkt = udpPacket(remote, 7100, local, 41000 + f, Buffer.from('reply'));
        assert.equal(native.tunWrite(fds[other]!, pkt, pkt.length, new Uint32Array([pkt.length]), 1), 1);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    return perFlow;
  } finally {
    for (const fd of fds) native.close(fd);
    sh('ip', ['link', 'del', dev], true);
  }
}

test('multi-queue TUN with the steering program: each flow leaves on one queue from its first packet on, even after its reverse flow came in on the other', { skip }, async () => {
  const steered = await queuesPerFlow(`ftss${suffix}`, true, 105);
  for (const [f, rounds] of steered.entries()) {
    const all = rounds.flat();
    assert.equal(new Set(all).size, 1, `flow ${f} on one queue: ${JSON.stringify(rounds)}`);
  }
  assert.equal(new Set(steered.map((r) => r[0]![0])).size, 2, `flows spread over both queues: ${JSON.stringify(steered)}`);
  // Without it the kernel moves flows to the queue their reverse flow was written on (why the program is there).
  const learned = await queuesPerFlow(`ftsl${suffix}`, false, 107);
  assert.ok(learned.some((rounds) => rounds[1]![0] !== rounds[0]![0]), `the kernel's own choice moved no flow: ${JSON.stringify(learned)}`);
});
