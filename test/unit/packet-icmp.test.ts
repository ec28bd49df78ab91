import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  CODE_FRAG_NEEDED,
  CODE_NET_UNREACHABLE,
  ICMP_DEST_UNREACHABLE,
  ICMP_ERROR_MAX,
  mayReplyWithIcmpError,
  writeIcmpError,
} from '../../src/packet/icmp.js';
import { checkIPv4, Ipv4Check, onesSum } from '../../src/packet/ipv4.js';
import { parseIP4 } from '../../src/net/ipaddr.js';
import { makePacket } from './packet-fixtures.js';

test('net unreachable is byte-exact: header, checksums, quoted header + 8 bytes', () => {
  const orig = makePacket({ src: '10.5.1.2', dst: '10.5.9.9', payloadLen: 100 });
  const out = Buffer.alloc(256, 0xee);
  const n = writeIcmpError(out, 16, orig, 0, orig.length, ICMP_DEST_UNREACHABLE, CODE_NET_UNREACHABLE, 0, parseIP4('10.5.0.0'));
  assert.equal(n, 20 + 8 + 28);
  const r = out.subarray(16, 16 + n);
  assert.equal(checkIPv4(r, 0, n, true, true), Ipv4Check.Ok);
  const expectedHeader = Buffer.from([
    0x45, 0xc0, 0x00, 56, 0, 0, 0, 0, 64, 1, 0, 0, // checksum patched below
    10, 5, 0, 0, 10, 5, 1, 2,
  ]);
  expectedHeader.writeUInt16BE(~onesSum(expectedHeader, 0, 20) & 0xffff, 10);
  assert.deepEqual(r.subarray(0, 20), expectedHeader);
  assert.deepEqual([...r.subarray(20, 28)].filter((_, i) => i !== 2 && i !== 3), [3, 0, 0, 0, 0, 0]);
  assert.equal(onesSum(r, 20, n - 20), 0xffff, 'ICMP checksum');
  assert.deepEqual(r.subarray(28), orig.subarray(0, 28));
  assert.equal(out[15], 0xee, 'nothing written before the slot');
  assert.equal(out[16 + n], 0xee, 'nothing written after the reply');
});

test('fragmentation needed carries the next-hop MTU and quotes options', () => {
  const orig = makePacket({ src: '10.5.1.2', dst: '10.5.9.9', payloadLen: 1400, df: true, ihlWords: 15 });
  const out = Buffer.alloc(ICMP_ERROR_MAX);
  const n = writeIcmpError(out, 0, orig, 0, orig.length, ICMP_DEST_UNREACHABLE, CODE_FRAG_NEEDED, 1472, parseIP4('10.5.0.0'));
  assert.equal(n, ICMP_ERROR_MAX);
  assert.equal(out[20], 3);
  assert.equal(out[21], 4);
  assert.equal(out.readUInt16BE(24), 0);
  assert.equal(out.readUInt16BE(26), 1472);
  assert.equal(onesSum(out, 20, n - 20), 0xffff);
  assert.deepEqual(out.subarray(28, n), orig.subarray(0, 68));
});

test('a packet shorter than header + 8 is quoted whole', () => {
  const orig = makePacket({ src: '10.5.1.2', dst: '10.5.9.9', payloadLen: 3 });
  const out = Buffer.alloc(ICMP_ERROR_MAX);
  const n = writeIcmpError(out, 0, orig, 0, orig.length, 3, 0, 0, 1);
  assert.equal(n, 28 + 23);
  assert.equal(onesSum(out, 20, n - 20), 0xffff, 'odd-length ICMP checksum');
  assert.equal(checkIPv4(out, 0, n, true, true), Ipv4Check.Ok);
});

test('never reply to ICMP errors, fragments, broadcasts or unusable sources', () => {
  const ok = (spec: Parameters<typeof makePacket>[0]) => {
    const p = makePacket(spec);
    return mayReplyWithIcmpError(p, 0, p.length);
  };
  const base = { src: '10.5.1.2', dst: '10.5.9.9' };
  assert.equal(ok(base), true);
  assert.equal(ok({ ...base, proto: 1, firstPayloadByte: 8 }), true, 'echo request');
  assert.equal(ok({ ...base, proto: 1, firstPayloadByte: 0 }), true, 'echo reply');
  for (const t of [3, 4, 5, 11, 12, 42]) assert.equal(ok({ ...base, proto: 1, firstPayloadByte: t }), false, `ICMP type ${t}`);
  assert.equal(ok({ ...base, proto: 1, payloadLen: 0 }), false, 'ICMP without a type byte');
  assert.equal(ok({ ...base, fragOffset: 10 }), false);
  assert.equal(ok({ ...base, dst: '224.0.0.5' }), false);
  assert.equal(ok({ ...base, dst: '255.255.255.255' }), false);
  assert.equal(ok({ ...base, src: '0.0.0.0' }), false);
  assert.equal(ok({ ...base, src: '127.0.0.1' }), false);
  assert.equal(ok({ ...base, src: '239.1.1.1' }), false);
});
