// Unit tests for the N-API addon's UDP half (no root needed: loopback only)
// plus argument validation for every function, which must throw instead of
// letting the kernel write outside a JS buffer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Worker } from 'node:worker_threads';
import { loadNative, type NativeAddon } from '../../src/native/addon.js';

const LOOPBACK = 0x7f000001;
const native: NativeAddon = loadNative();

/** Deterministic payload byte j of datagram i, so every datagram differs. */
const pattern = (i: number, j: number): number => (i * 31 + j * 7 + 1) & 0xff;

function withSockets(n: number, fn: (fds: number[]) => void, reusePort = false): void {
  const fds: number[] = [];
  try {
    for (let i = 0; i < n; i++) fds.push(native.udpOpen('127.0.0.1', 0, reusePort));
    fn(fds);
  } finally {
    for (const fd of fds) native.close(fd);
  }
}

/** Receives until `want` datagrams arrived or 2 s passed. */
function recvAll(fd: number, slotSize: number, want: number) {
  const buf = Buffer.alloc(slotSize * want);
  const lens = new Uint32Array(want);
  const addrs = new Uint32Array(want);
  const ports = new Uint16Array(want);
  const got: { data: Buffer; len: number; addr: number; port: number }[] = [];
  const deadline = Date.now() + 2000;
  while (got.length < want && Date.now() < deadline) {
    const n = native.udpRecv(fd, buf, slotSize, lens, addrs, ports, want - got.length, 200);
    for (let i = 0; i < n; i++) {
      const len = lens[i]!;
      const copy = Buffer.from(buf.subarray(i * slotSize, i * slotSize + Math.min(len, slotSize)));
      got.push({ data: copy, len, addr: addrs[i]!, port: ports[i]! });
    }
  }
  return got;
}

test('udpSend/udpRecv move a batch of 64 datagrams of different sizes', () => {
  withSockets(2, ([a, b]) => {
    const slotSize = 2048;
    const count = 64;
    const bPort = native.udpLocalPort(b!);
    const aPort = native.udpLocalPort(a!);
    assert.ok(aPort > 0 && bPort > 0 && aPort !== bPort);

    const buf = Buffer.alloc(slotSize * count);
    const lens = new Uint32Array(count);
    const addrs = new Uint32Array(count).fill(LOOPBACK);
    const ports = new Uint16Array(count).fill(bPort);
    for (let i = 0; i < count; i++) {
      lens[i] = i === 0 ? 0 : 1 + ((i * 97) % 1500); // includes an empty datagram
      for (let j = 0; j < lens[i]!; j++) buf[i * slotSize + j] = pattern(i, j);
    }
    assert.equal(native.udpSend(a!, buf, slotSize, lens, addrs, ports, count), count);

    const got = recvAll(b!, slotSize, count);
    assert.equal(got.length, count);
    got.forEach((d, i) => {
      // A single loopback socket pair keeps order.
      assert.equal(d.len, lens[i], `length of datagram ${i}`);
      assert.equal(d.addr, LOOPBACK);
      assert.equal(d.port, aPort);
      for (let j = 0; j < d.len; j++) assert.equal(d.data[j], pattern(i, j), `byte ${j} of datagram ${i}`);
    });
  });
});

test('udpRecv reports a truncated datagram as slotSize + 1', () => {
  withSockets(2, ([a, b]) => {
    const big = Buffer.alloc(100, 0xab);
    const lens = new Uint32Array([100]);
    assert.equal(native.udpSend(a!, big, 100, lens, new Uint32Array([LOOPBACK]), new Uint16Array([native.udpLocalPort(b!)]), 1), 1);
    const buf = Buffer.alloc(50);
    const rl = new Uint32Array(1);
    const n = native.udpRecv(b!, buf, 50, rl, new Uint32Array(1), new Uint16Array(1), 1, 1000);
    assert.equal(n, 1);
    assert.equal(rl[0], 51);
    assert.ok(buf.every((x) => x === 0xab), 'the part that fits is delivered');
  });
});

test('udpRecv returns 0 after the timeout when nothing arrives', () => {
  withSockets(1, ([a]) => {
    const t0 = Date.now();
    const n = native.udpRecv(a!, Buffer.alloc(1500 * 4), 1500, new Uint32Array(4), new Uint32Array(4), new Uint16Array(4), 4, 100);
    const dt = Date.now() - t0;
    assert.equal(n, 0);
    assert.ok(dt >= 80 && dt < 1500, `waited ${dt} ms`);
    // timeoutMs 0 is a pure non-blocking poll
    assert.equal(native.udpRecv(a!, Buffer.alloc(1500), 1500, new Uint32Array(1), new Uint32Array(1), new Uint16Array(1), 1, 0), 0);
    // max 0 is a no-op
    assert.equal(native.udpRecv(a!, Buffer.alloc(0), 1500, new Uint32Array(0), new Uint32Array(0), new Uint16Array(0), 0, 50), 0);
  });
});

test('reusePort lets two sockets bind one port; without it the bind fails with EADDRINUSE', () => {
  const a = native.udpOpen('127.0.0.1', 0, true);
  try {
    const port = native.udpLocalPort(a);
    const b = native.udpOpen('127.0.0.1', port, true);
    try {
      assert.equal(native.udpLocalPort(b), port);
      assert.throws(
        () => native.udpOpen('127.0.0.1', port, false),
        (err: NodeJS.ErrnoException) => err.code === 'EADDRINUSE' && err.syscall === 'bind' && /already used/.test(err.message),
      );
    } finally {
      native.close(b);
    }
  } finally {
    native.close(a);
  }
});

test('udpOpen errors carry errno names and hints', () => {
  assert.throws(
    () => native.udpOpen('192.0.2.77', 0, false), // TEST-NET-1: never assigned here
    (err: NodeJS.ErrnoException) => err.code === 'EADDRNOTAVAIL' && err.errno === -99 && /not assigned/.test(err.message),
  );
  assert.throws(() => native.udpOpen('not an ip', 0, false), RangeError);
  assert.throws(() => native.udpOpen('127.0.0.1', 70000, false), RangeError);
  assert.throws(() => native.udpOpen(42 as unknown as string, 0, false), TypeError);
});

test('udpSend drops datagrams the kernel rejects but sends the rest', () => {
  withSockets(2, ([a, b]) => {
    const bPort = native.udpLocalPort(b!);
    const buf = Buffer.alloc(3 * 64, 1);
    const lens = new Uint32Array([10, 10, 10]);
    // port 0 is invalid as a destination (EINVAL) for the middle one
    const sent = native.udpSend(a!, buf, 64, lens, new Uint32Array(3).fill(LOOPBACK), new Uint16Array([bPort, 0, bPort]), 3);
    assert.equal(sent, 2);
    assert.equal(recvAll(b!, 64, 2).length, 2);
  });
});

test('closed or bogus fds throw EBADF instead of crashing', () => {
  const fd = native.udpOpen('127.0.0.1', 0, false);
  native.close(fd);
  assert.throws(() => native.close(fd), (err: NodeJS.ErrnoException) => err.code === 'EBADF');
  assert.throws(() => native.udpLocalPort(fd), (err: NodeJS.ErrnoException) => err.code === 'EBADF');
  assert.throws(
    () => native.udpRecv(fd, Buffer.alloc(64), 64, new Uint32Array(1), new Uint32Array(1), new Uint16Array(1), 1, 0),
    (err: NodeJS.ErrnoException) => err.code === 'EBADF',
  );
  assert.throws(
    () => native.udpSend(fd, Buffer.alloc(64), 64, new Uint32Array([1]), new Uint32Array([LOOPBACK]), new Uint16Array([9]), 1),
    (err: NodeJS.ErrnoException) => err.code === 'EBADF',
  );
  assert.throws(() => native.tunRead(fd, Buffer.alloc(64), 64, new Uint32Array(1), 1, 0), (err: NodeJS.ErrnoException) => err.code === 'EBADF');
  assert.throws(() => native.tunWrite(fd, Buffer.alloc(64), 64, new Uint32Array([20]), 1), (err: NodeJS.ErrnoException) => err.code === 'EBADF');
});

test('bad arguments throw TypeError/RangeError, never crash', () => {
  withSockets(1, ([fd]) => {
    const u32 = (n: number) => new Uint32Array(n);
    const u16 = (n: number) => new Uint16Array(n);
    const B = (n: number) => Buffer.alloc(n);
    const cases: [string, () => unknown, ErrorConstructor][] = [
      ['buffer too small for max slots', () => native.udpRecv(fd!, B(100), 64, u32(2), u32(2), u16(2), 2, 0), RangeError],
      ['lens shorter than max', () => native.udpRecv(fd!, B(256), 64, u32(1), u32(4), u16(4), 4, 0), RangeError],
      ['addrs shorter than max', () => native.udpRecv(fd!, B(256), 64, u32(4), u32(3), u16(4), 4, 0), RangeError],
      ['ports shorter than max', () => native.udpRecv(fd!, B(256), 64, u32(4), u32(4), u16(3), 4, 0), RangeError],
      ['max above 1024', () => native.udpRecv(fd!, B(2000), 1, u32(2000), u32(2000), u16(2000), 1025, 0), RangeError],
      ['negative timeout', () => native.udpRecv(fd!, B(64), 64, u32(1), u32(1), u16(1), 1, -1), RangeError],
      ['fractional max', () => native.udpRecv(fd!, B(256), 64, u32(4), u32(4), u16(4), 1.5, 0), RangeError],
      ['NaN slotSize', () => native.udpRecv(fd!, B(256), NaN, u32(4), u32(4), u16(4), 1, 0), RangeError],
      ['zero slotSize', () => native.udpRecv(fd!, B(256), 0, u32(4), u32(4), u16(4), 1, 0), RangeError],
      ['lens of wrong type', () => native.udpRecv(fd!, B(256), 64, new Int32Array(4) as unknown as Uint32Array, u32(4), u16(4), 4, 0), TypeError],
      ['ports of wrong type', () => native.udpRecv(fd!, B(256), 64, u32(4), u32(4), u32(4) as unknown as Uint16Array, 4, 0), TypeError],
      ['buf not a buffer', () => native.udpRecv(fd!, 'x' as unknown as Buffer, 64, u32(4), u32(4), u16(4), 4, 0), TypeError],
      ['missing arguments', () => (native.udpRecv as unknown as (fd: number) => number)(fd!), TypeError],
      ['negative fd', () => native.udpLocalPort(-1), RangeError],
      ['string fd', () => native.close('3' as unknown as number), TypeError],
      ['send len beyond slot', () => native.udpSend(fd!, B(128), 64, new Uint32Array([65, 1]), u32(2), u16(2), 2), RangeError],
      ['send count beyond buf', () => native.udpSend(fd!, B(64), 64, u32(2), u32(2), u16(2), 2), RangeError],
      ['tunRead buffer too small', () => native.tunRead(fd!, B(100), 64, u32(2), 2, 0), RangeError],
      ['tunRead lens too short', () => native.tunRead(fd!, B(128), 64, u32(1), 2, 0), RangeError],
      ['tunWrite len beyond slot', () => native.tunWrite(fd!, B(128), 64, new Uint32Array([20, 99]), 2), RangeError],
      ['tunOpen name too long', () => native.tunOpen('x'.repeat(16), false), RangeError],
      ['tunOpen name with slash', () => native.tunOpen('a/b', false), RangeError],
      ['tunOpen name not a string', () => native.tunOpen(7 as unknown as string, false), TypeError],
      ['tunOpen multiQueue not a boolean', () => native.tunOpen('ftsbad', 1 as unknown as boolean), TypeError],
    ];
    for (const [what, fn, type] of cases) assert.throws(fn, type, what);
  });
});

test('typed-array views with a byteOffset are honoured', () => {
  withSockets(2, ([a, b]) => {
    const backing = new ArrayBuffer(4096);
    const sendBuf = new Uint8Array(backing, 1000, 200); // slot memory starts mid-buffer
    sendBuf.fill(0x5a);
    const lens = new Uint32Array(new ArrayBuffer(64), 16, 1);
    lens[0] = 200;
    assert.equal(native.udpSend(a!, sendBuf as Buffer, 200, lens, new Uint32Array([LOOPBACK]), new Uint16Array([native.udpLocalPort(b!)]), 1), 1);
    const got = recvAll(b!, 256, 1);
    assert.equal(got.length, 1);
    assert.equal(got[0]!.len, 200);
    assert.ok(got[0]!.data.subarray(0, 200).every((x) => x === 0x5a));
    assert.ok(new Uint8Array(backing, 0, 1000).every((x) => x === 0), 'bytes before the view untouched');
  });
});

test('the addon loads and works inside worker threads', async () => {
  const url = new URL('../../src/native/addon.js', import.meta.url).href;
  // Two workers at once: the addon must be context-aware, with per-thread state.
  const code = `
    import { parentPort } from 'node:worker_threads';
    const { loadNative } = await import(${JSON.stringify(url)});
    const n = loadNative();
    const a = n.udpOpen('127.0.0.1', 0, false), b = n.udpOpen('127.0.0.1', 0, false);
    const lens = new Uint32Array(32).fill(100);
    const sent = n.udpSend(a, Buffer.alloc(32 * 128), 128, lens, new Uint32Array(32).fill(0x7f000001), new Uint16Array(32).fill(n.udpLocalPort(b)), 32);
    let got = 0;
    for (let i = 0; i < 20 && got < 32; i++) got += n.udpRecv(b, Buffer.alloc(32 * 128), 128, new Uint32Array(32), new Uint32Array(32), new Uint16Array(32), 32, 100);
    n.close(a); n.close(b);
    parentPort.postMessage({ sent, got });
  `;
  const run = () =>
    new Promise<{ sent: number; got: number }>((resolve, reject) => {
      const w = new Worker(new URL(`data:text/javascript,${encodeURIComponent(code)}`));
      w.once('message', resolve);
      w.once('error', reject);
    });
  const results = await Promise.all([run(), run()]);
  for (const r of results) assert.deepEqual(r, { sent: 32, got: 32 });
});
