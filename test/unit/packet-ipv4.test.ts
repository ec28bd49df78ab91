import { test } from 'node:test';
import assert from 'node:assert/strict';
import { checkIPv4, checksum, decrementTtl, headerChecksumValid, Ipv4Check, onesSum, readU16 } from '../../src/packet/ipv4.js';
import { makePacket } from './packet-fixtures.js';

test('a crafted packet passes every check', () => {
  const p = makePacket({ src: '10.5.1.2', dst: '10.5.2.3' });
  assert.equal(checkIPv4(p, 0, p.length, true, true), Ipv4Check.Ok);
  assert.ok(headerChecksumValid(p, 0));
});

test('structural checks name the first problem', () => {
  const p = makePacket({ src: '10.5.1.2', dst: '10.5.2.3', payloadLen: 10 });
  assert.equal(checkIPv4(p, 0, 19, true, true), Ipv4Check.TooShort);
  const v6 = Buffer.from(p);
  v6[0] = 0x65;
  assert.equal(checkIPv4(v6, 0, v6.length, true, true), Ipv4Check.NotIPv4);
  const ihl4 = Buffer.from(p);
  ihl4[0] = 0x44;
  assert.equal(checkIPv4(ihl4, 0, ihl4.length, true, true), Ipv4Check.BadHeaderLength);
  const ihlBig = Buffer.from(p);
  ihlBig[0] = 0x4f; // 60-byte header in a 30-byte packet
  assert.equal(checkIPv4(ihlBig, 0, ihlBig.length, true, true), Ipv4Check.BadHeaderLength);
  // Datagram shorter than the total length (truncated) or longer (trailing bytes).
  assert.equal(checkIPv4(p, 0, p.length - 1, true, true), Ipv4Check.BadTotalLength);
  const padded = Buffer.concat([p, Buffer.alloc(4)]);
  assert.equal(checkIPv4(padded, 0, padded.length, true, true), Ipv4Check.BadTotalLength);
  // Without exactLength, trailing bytes are tolerated but a short read is not.
  assert.equal(checkIPv4(padded, 0, padded.length, false, true), Ipv4Check.Ok);
  assert.equal(checkIPv4(p, 0, p.length - 1, false, true), Ipv4Check.BadTotalLength);
  const bad = Buffer.from(p);
  bad[15] ^= 1;
  assert.equal(checkIPv4(bad, 0, bad.length, true, true), Ipv4Check.BadChecksum);
  assert.equal(checkIPv4(bad, 0, bad.length, true, false), Ipv4Check.Ok);
});

test('checks work at a slot offset', () => {
  const p = makePacket({ src: '1.2.3.4', dst: '5.6.7.8', ihlWords: 6 });
  const buf = Buffer.alloc(4096);
  p.copy(buf, 2048);
  assert.equal(checkIPv4(buf, 2048, p.length, true, true), Ipv4Check.Ok);
});

test('one\'s complement sum handles odd lengths (RFC 1071 example)', () => {
  const b = Buffer.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
  assert.equal(onesSum(b, 0, 8), 0xddf2);
  assert.equal(onesSum(Buffer.from([0xab]), 0, 1), 0xab00);
});

test('incremental TTL decrement equals a full recompute for every TTL and many headers', () => {
  let seed = 12345;
  const rnd = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) >>> 8) & 255;
  for (let ttl = 2; ttl <= 255; ttl++) {
    for (let k = 0; k < 40; k++) {
      const p = makePacket({ src: `${rnd()}.${rnd()}.${rnd()}.${rnd()}`, dst: `${rnd()}.${rnd()}.${rnd()}.${rnd()}`, ttl, proto: rnd(), payloadLen: rnd() });
      decrementTtl(p, 0);
      assert.equal(p[8], ttl - 1);
      const got = readU16(p, 10);
      p[10] = p[11] = 0;
      const want = checksum(p, 0, 20);
      // 0x0000 and 0xffff both denote zero in one's complement; RFC 1624 avoids producing -0 wrongly.
      assert.equal(got, want, `ttl ${ttl}`);
    }
  }
});

test('incremental update stays valid around the 0x0000/0xffff checksum boundary', () => {
  // Search headers whose checksum is 0x0000 or 0xffff-adjacent and verify validity after decrement.
  let found = 0;
  for (let a = 0; a < 65536 && found < 50; a++) {
    const p = makePacket({ src: '10.0.0.1', dst: `10.${a >> 8}.${a & 255}.9`, ttl: 2 + (a % 200) });
    const cs = readU16(p, 10);
    if (cs > 0x0100 && cs < 0xfe00) continue;
    found++;
    decrementTtl(p, 0);
    assert.ok(headerChecksumValid(p, 0), `a=${a} cs=${cs.toString(16)}`);
  }
  assert.ok(found > 0);
});
