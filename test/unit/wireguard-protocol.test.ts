/**
 * WireGuard's protocol pieces against published vectors and against
 * themselves: BLAKE2s (RFC 7693, the BLAKE2 reference KAT, node's own
 * blake2s256), X25519 (RFC 7748), HChaCha20 and XChaCha20-Poly1305
 * (draft-irtf-cfrg-xchacha), a whole Noise_IKpsk2 handshake with fixed
 * keys (both sides derive crosswise-equal transport keys; tampering with any
 * byte breaks it), mac1/mac2 and cookie replies, and the replay window.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { blake2s } from '../../src/wireguard/blake2s.js';
import { aeadOpen, aeadSeal, dh, hchacha20, kdf, publicKeyOf, tai64n, xaeadOpen, xaeadSeal } from '../../src/wireguard/primitives.js';
import { consumeInitiation, consumeResponse, createInitiation, createResponse, timestampNewer } from '../../src/wireguard/noise.js';
import { CookieChecker, CookieGenerator, ipv4Source } from '../../src/wireguard/cookie.js';
import { ReplayWindows, REPLAY_WINDOW } from '../../src/wireguard/replay.js';
import { Init, INITIATION_LEN, RESPONSE_LEN } from '../../src/wireguard/messages.js';

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ''), 'hex');
const seq = (n: number, from = 0) => Buffer.from(Array.from({ length: n }, (_, i) => (from + i) & 0xff));

test('BLAKE2s: RFC 7693 "abc", the reference keyed KAT, and node\'s blake2s256 on random input', () => {
  assert.equal(blake2s([Buffer.from('abc')]).toString('hex'), '508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982');
  // blake2s-kat.txt, keyed: key 00..1f over the empty message and over 00.
  assert.equal(blake2s([], 32, seq(32)).toString('hex'), '48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49');
  assert.equal(blake2s([seq(1)], 32, seq(32)).toString('hex'), '40d15fee7c328830166ac3f918650f807e7e01e177258cdc0a39b11f598066f1');
  for (const len of [0, 1, 63, 64, 65, 127, 128, 129, 1000]) {
    const data = randomBytes(len);
    // Split anywhere: the parts are hashed as one message.
    const cut = Math.floor(len / 3);
    assert.equal(blake2s([data.subarray(0, cut), data.subarray(cut)]).toString('hex'), createHash('blake2s256').update(data).digest('hex'), `length ${len}`);
  }
  assert.equal(blake2s([Buffer.from('x')], 16, seq(32)).length, 16);
  assert.throws(() => blake2s([], 33), RangeError);
});

test('X25519: RFC 7748 section 5.2 and the section 6.1 key agreement', () => {
  assert.equal(dh(hex('a546e36bf0527c9d3b16154b82465edd62144c0ac1fc5a18506a2244ba449ac4'), hex('e6db6867583030db3594c1a424b15f7c726624ec26b3353b10a903a6d0ab1c4c')).toString('hex'), 'c3da55379de9c6908e94ea4df28d084f32eccf03491c71f754b4075577a28552');
  const alice = hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
  const bob = hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
  assert.equal(publicKeyOf(alice).toString('hex'), '8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
  assert.equal(publicKeyOf(bob).toString('hex'), 'de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
  assert.equal(dh(alice, publicKeyOf(bob)).toString('hex'), '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742');
  assert.throws(() => dh(alice, Buffer.alloc(32)), /all-zero/);
});

test('HChaCha20 and XChaCha20-Poly1305: draft-irtf-cfrg-xchacha vectors', () => {
  assert.equal(hchacha20(seq(32), hex('000000090000004a0000000031415927')).toString('hex'), '82413b4227b27bfed30e42508a877d73a0f9e4d58a74a853c12ec41326d3ecdc');
  const pt = Buffer.from("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.");
  const sealed = xaeadSeal(seq(32, 0x80), seq(24, 0x40), pt, hex('50515253c0c1c2c3c4c5c6c7'));
  assert.equal(sealed.subarray(0, 16).toString('hex'), 'bd6d179d3e83d43b9576579493c0e939');
  assert.equal(sealed.subarray(sealed.length - 16).toString('hex'), 'c0875924c1c7987947deafd8780acf49');
  assert.deepEqual(xaeadOpen(seq(32, 0x80), seq(24, 0x40), sealed, hex('50515253c0c1c2c3c4c5c6c7')), pt);
  sealed[3]! ^= 1;
  assert.equal(xaeadOpen(seq(32, 0x80), seq(24, 0x40), sealed, hex('50515253c0c1c2c3c4c5c6c7')), null);
});

test('AEAD with counter nonces, KDF outputs chain, TAI64N orders', () => {
  const key = randomBytes(32);
  const c = aeadSeal(key, 7n, Buffer.from('hello'), Buffer.from('ad'));
  assert.deepEqual(aeadOpen(key, 7n, c, Buffer.from('ad')), Buffer.from('hello'));
  assert.equal(aeadOpen(key, 8n, c, Buffer.from('ad')), null, 'another counter');
  assert.equal(aeadOpen(key, 7n, c, Buffer.from('ae')), null, 'another AAD');
  const [a, b, d] = kdf(3, key, Buffer.from('in'));
  assert.deepEqual(kdf(1, key, Buffer.from('in')), [a]);
  assert.deepEqual(kdf(2, key, Buffer.from('in')), [a, b]);
  assert.notDeepEqual(b, d);
  const t1 = tai64n(1_700_000_000_123);
  assert.equal(t1.readBigUInt64BE(0), 0x400000000000000an + 1_700_000_000n);
  assert.equal(t1.readUInt32BE(8), 123_000_000);
  assert.ok(timestampNewer(tai64n(1_700_000_000_124), t1));
  assert.ok(!timestampNewer(t1, t1), 'a replayed timestamp is not newer');
});

const initiatorPriv = hex('e84b5a6d2717c1003a13b431570353dbaca9146cf150c5f8575680feba52027a');
const responderPriv = hex('c8e8e2ab9e7d74bd4b6d1d50d2d0a9b6f0b9d9e7f4aa8d2a5b2dcfd9ea8b7a71');
const initiator = { staticPrivate: initiatorPriv, staticPublic: publicKeyOf(initiatorPriv) };
const responder = { staticPrivate: responderPriv, staticPublic: publicKeyOf(responderPriv) };
const ephI = { privateKey: hex('1111111111111111111111111111111111111111111111111111111111111111'), publicKey: publicKeyOf(hex('1111111111111111111111111111111111111111111111111111111111111111')) };
const ephR = { privateKey: hex('2222222222222222222222222222222222222222222222222222222222222222'), publicKey: publicKeyOf(hex('2222222222222222222222222222222222222222222222222222222222222222')) };
const psk = hex('3333333333333333333333333333333333333333333333333333333333333333');

test('a whole handshake with fixed keys: crosswise-equal transport keys, deterministic bytes, every tampered byte refused', () => {
  const { message: init, state } = createInitiation(initiator, responder.staticPublic, 0x01020304, ephI, 1_700_000_000_000);
  assert.equal(init.length, INITIATION_LEN);
  assert.deepEqual(init.subarray(0, 8), hex('0100000004030201'));
  assert.deepEqual(init.subarray(Init.ephemeral, Init.ephemeral + 32), ephI.publicKey);
  const again = createInitiation(initiator, responder.staticPublic, 0x01020304, ephI, 1_700_000_000_000).message;
  assert.deepEqual(again, init, 'same inputs, same bytes');

  const got = consumeInitiation(responder, init);
  assert.ok(got);
  assert.deepEqual(got.remoteStatic, initiator.staticPublic);
  assert.deepEqual(got.timestamp, tai64n(1_700_000_000_000));
  assert.equal(got.remoteIndex, 0x01020304);
  const { message: resp, keys: rKeys } = createResponse(got, 0x0a0b0c0d, psk, ephR);
  assert.equal(resp.length, RESPONSE_LEN);
  const iKeys = consumeResponse(initiator, state, resp, psk);
  assert.ok(iKeys);
  assert.deepEqual(iKeys.sendKey, rKeys.recvKey);
  assert.deepEqual(iKeys.recvKey, rKeys.sendKey);
  assert.notDeepEqual(iKeys.sendKey, iKeys.recvKey);
  assert.equal(iKeys.remoteIndex, 0x0a0b0c0d);
  assert.equal(rKeys.remoteIndex, 0x01020304);
  // The transport keys work as WireGuard uses them: counter nonce, empty AAD.
  const pkt = aeadSeal(iKeys.sendKey, 0n, Buffer.from('ping'), Buffer.alloc(0));
  assert.deepEqual(aeadOpen(rKeys.recvKey, 0n, pkt, Buffer.alloc(0)), Buffer.from('ping'));

  assert.equal(consumeResponse(initiator, state, resp, null), null, 'the PSK matters');
  assert.equal(consumeInitiation({ ...responder, staticPrivate: randomBytes(32) }, init), null, 'only for its responder');
  for (let i = 8; i < 116; i++) {
    const bad = Buffer.from(init);
    bad[i]! ^= 0x40;
    assert.equal(consumeInitiation(responder, bad), null, `initiation byte ${i}`);
  }
  for (let i = 12; i < 60; i++) {
    const bad = Buffer.from(resp);
    bad[i]! ^= 0x40;
    assert.equal(consumeResponse(initiator, state, bad, psk), null, `response byte ${i}`);
  }
});

test('mac1 keyed by the receiver, mac2 and cookie replies bound to the sender address', () => {
  const { message: init } = createInitiation(initiator, responder.staticPublic, 9, ephI);
  const gen = new CookieGenerator(responder.staticPublic);
  const checker = new CookieChecker(responder.staticPublic);
  gen.addMacs(init);
  assert.ok(checker.checkMac1(init));
  assert.ok(!new CookieChecker(initiator.staticPublic).checkMac1(init), 'mac1 for another key');
  assert.ok(!checker.checkMac2(init, ipv4Source(0xc0000201, 51820)), 'no cookie yet');
  const reply = checker.createReply(init, ipv4Source(0xc0000201, 51820));
  assert.equal(reply.readUInt32LE(4), 9, 'addressed to the initiation sender index');
  assert.ok(gen.consumeReply(reply));
  gen.addMacs(init);
  assert.ok(checker.checkMac1(init) && checker.checkMac2(init, ipv4Source(0xc0000201, 51820)));
  assert.ok(!checker.checkMac2(init, ipv4Source(0xc0000202, 51820)), 'the cookie is bound to the address');
  const forged = Buffer.from(reply);
  forged[40]! ^= 1;
  assert.ok(!new CookieGenerator(responder.staticPublic).consumeReply(forged));
});

test('replay window: once each, in any order within the window, nothing older', () => {
  const windows = new ReplayWindows(2);
  const w = { accept: (c: number) => windows.accept(0, 1, c) };
  assert.ok(w.accept(0));
  assert.ok(!w.accept(0));
  assert.ok(w.accept(5));
  assert.ok(w.accept(3));
  assert.ok(!w.accept(3));
  assert.ok(w.accept(10_000));
  assert.ok(!w.accept(10_000 - REPLAY_WINDOW), 'older than the window');
  assert.ok(w.accept(10_000 - 100));
  assert.ok(!w.accept(10_000 - 100));
  assert.ok(!w.accept(2 ** 53), 'beyond what a key can count');
  // Random order inside the window: each accepted exactly once.
  const w2 = { accept: (c: number) => windows.accept(1, 1, c) };
  const order = Array.from({ length: 1500 }, (_, i) => i).sort(() => Math.random() - 0.5);
  for (const c of order) assert.ok(w2.accept(c));
  for (const c of order) assert.ok(!w2.accept(c));
  // A keypair written into slot 0 again (a new generation) starts its window afresh.
  assert.ok(windows.accept(0, 2, 0));
});
