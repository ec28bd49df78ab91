/**
 * VICI message and packet encoding (strongSwan's charon control protocol):
 * exact bytes for a small message, round trips, stream splitting, and a
 * clear error for every kind of malformed input.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { decodeMessage, decodePacket, encodeMessage, encodePacket, PacketReader, PacketType, ViciError, MAX_PACKET, type ViciMessage } from '../../src/vici/codec.js';

test('a message encodes to the element bytes the protocol defines', () => {
  const bytes = encodeMessage({ a: 'b', l: ['x', ''], s: { k: 'v' } });
  assert.deepEqual(
    [...bytes],
    [
      3, 1, 0x61, 0, 1, 0x62, // key "a" = "b"
      4, 1, 0x6c, 5, 0, 1, 0x78, 5, 0, 0, 6, // list "l": "x", ""
      1, 1, 0x73, 3, 1, 0x6b, 0, 1, 0x76, 2, // section "s" { k = v }
    ],
  );
});

test('packets: named types carry their name, responses do not; the length prefix is big-endian', () => {
  const req = encodePacket({ type: PacketType.CmdRequest, name: 'version', message: {} });
  assert.deepEqual([...req], [0, 0, 0, 9, 0, 7, ...Buffer.from('version')]);
  const resp = encodePacket({ type: PacketType.CmdResponse, message: { daemon: 'charon' } });
  assert.equal(resp.readUInt32BE(0), resp.length - 4);
  assert.deepEqual(decodePacket(resp.subarray(4)), { type: PacketType.CmdResponse, name: undefined, message: { daemon: 'charon' } });
});

test('round trip of a connection definition as flannel-ts loads it', () => {
  const msg: ViciMessage = {
    'flannel-198.18.0.1-10.5.1.0/24-10.5.2.0/24-198.18.0.2': {
      version: '2',
      local_addrs: ['198.18.0.1'],
      remote_addrs: ['198.18.0.2'],
      proposals: ['aes256-sha256-modp4096'],
      local: { auth: 'psk' },
      remote: { auth: 'psk' },
      children: { '10.5.1.0/24-10.5.2.0/24': { local_ts: ['10.5.1.0/24'], remote_ts: ['10.5.2.0/24'], esp_proposals: ['aes128gcm16-sha256-prfsha256-ecp256'], mode: 'tunnel' } },
    },
  };
  const back = decodeMessage(encodeMessage(msg));
  assert.deepEqual(back, msg);
  assert.deepEqual(Object.keys((back['flannel-198.18.0.1-10.5.1.0/24-10.5.2.0/24-198.18.0.2'] as ViciMessage)), Object.keys(msg['flannel-198.18.0.1-10.5.1.0/24-10.5.2.0/24-198.18.0.2'] as ViciMessage), 'key order kept');
});

test('the packet reader joins packets split across chunks and splits packets sharing one', () => {
  const a = encodePacket({ type: PacketType.CmdResponse, message: { success: 'yes' } });
  const b = encodePacket({ type: PacketType.Event, name: 'list-sa', message: { ike: { state: 'ESTABLISHED' } } });
  const stream = Buffer.concat([a, b]);
  const r = new PacketReader();
  const got = [];
  for (let i = 0; i < stream.length; i += 3) got.push(...r.push(stream.subarray(i, i + 3)));
  assert.deepEqual(got.map((p) => [p.type, p.name]), [[PacketType.CmdResponse, undefined], [PacketType.Event, 'list-sa']]);
  assert.deepEqual(new PacketReader().push(stream).length, 2);
});

test('malformed input: a ViciError saying what is wrong, never a crash or a silent partial message', () => {
  const cases: [string, number[], RegExp][] = [
    ['truncated key/value', [3, 1, 0x61, 0, 5, 0x62], /truncated message/],
    ['key length past the end', [3, 9, 0x61], /truncated message/],
    ['list item outside a list', [5, 0, 0], /list item outside a list/],
    ['list end outside a list', [6], /list end outside a list/],
    ['section end without a section', [2], /section end without a section/],
    ['unknown element', [9], /unknown element type 9/],
    ['message ends inside a list', [4, 1, 0x6c], /inside a list/],
    ['message ends inside a section', [1, 1, 0x73], /inside a section/],
    ['key/value inside a list', [4, 1, 0x6c, 3, 1, 0x61, 0, 0], /inside a list/],
  ];
  for (const [what, bytes, re] of cases) assert.throws(() => decodeMessage(Buffer.from(bytes)), (e: Error) => e instanceof ViciError && re.test(e.message), what);
  assert.throws(() => decodePacket(Buffer.alloc(0)), /empty packet/);
  assert.throws(() => decodePacket(Buffer.from([42])), /unknown packet type 42/);
  assert.throws(() => decodePacket(Buffer.from([PacketType.Event, 10, 0x61])), /truncated packet name/);
  const huge = Buffer.alloc(4);
  huge.writeUInt32BE(MAX_PACKET + 1);
  assert.throws(() => new PacketReader().push(huge), /limit/);
  assert.throws(() => encodeMessage({ ['k'.repeat(256)]: 'v' }), /1\.\.255 bytes/);
  assert.throws(() => encodeMessage({ k: 'v'.repeat(70_000) }), /longer than 65535/);
  assert.throws(() => encodePacket({ type: PacketType.CmdRequest, message: {} }), /packet name/);
});

test('random bytes never crash the decoder: each input decodes or throws a ViciError', () => {
  let seed = 7;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed);
  for (let i = 0; i < 5000; i++) {
    const buf = Buffer.from(Array.from({ length: rnd() % 40 }, () => rnd() % 8));
    try {
      decodeMessage(buf);
    } catch (e) {
      assert.ok(e instanceof ViciError, String(e));
    }
  }
});
