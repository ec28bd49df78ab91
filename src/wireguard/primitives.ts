/**
 * WireGuard's cryptographic primitives (whitepaper section 5.4), on
 * node:crypto where it has them: X25519 (DH), ChaCha20-Poly1305 (AEAD),
 * HMAC-BLAKE2s (HMAC, KDF). Keyed BLAKE2s-128 (MAC) comes from blake2s.ts,
 * and XChaCha20-Poly1305 (XAEAD, cookies only) is HChaCha20 here plus
 * node's ChaCha20-Poly1305, as the XChaCha construction defines it.
 * These serve handshakes; the transport path seals in batches in C.
 */
import { createCipheriv, createDecipheriv, createHmac, createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { blake2s } from './blake2s.js';

export const KEY_LEN = 32;
export const TAG_LEN = 16;

const PKCS8_X25519 = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_X25519 = Buffer.from('302a300506032b656e032100', 'hex');

export interface KeyPair {
  privateKey: Buffer;
  publicKey: Buffer;
}

/**
 * A fresh X25519 key pair (raw 32-byte keys): the DER encodings the key
 * generation itself returns, less their fixed prefixes. Not KeyObject
 * exports: in Node 20, exporting a freshly generated KeyObject can deadlock
 * the thread for good when a garbage collection inside the export destroys
 * an earlier key-generation job holding the same key's mutex (measured
 * here: generate + JWK export hung within 50,000 pairs; DER from the
 * generation ran 300,000 without). Every handshake makes an ephemeral pair,
 * so the daemon's main thread would hang after enough of them.
 */
export function generateKeyPair(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('x25519', { publicKeyEncoding: { type: 'spki', format: 'der' }, privateKeyEncoding: { type: 'pkcs8', format: 'der' } });
  if (privateKey.length !== PKCS8_X25519.length + 32 || publicKey.length !== SPKI_X25519.length + 32) throw new Error('unexpected X25519 key encoding');
  return { privateKey: Buffer.from(privateKey.subarray(PKCS8_X25519.length)), publicKey: Buffer.from(publicKey.subarray(SPKI_X25519.length)) };
}

/** The public key of a raw private key (clamping is X25519's own). */
export function publicKeyOf(privateKey: Uint8Array): Buffer {
  const k = createPublicKey(createPrivateKey({ key: Buffer.concat([PKCS8_X25519, privateKey]), format: 'der', type: 'pkcs8' }));
  return Buffer.from((k.export({ format: 'der', type: 'spki' }) as Buffer).subarray(SPKI_X25519.length));
}

/** DH(private, public): the X25519 shared secret. Throws on a low-order public key (all-zero result). */
export function dh(privateKey: Uint8Array, publicKey: Uint8Array): Buffer {
  let out: Buffer;
  try {
    out = diffieHellman({
      privateKey: createPrivateKey({ key: Buffer.concat([PKCS8_X25519, privateKey]), format: 'der', type: 'pkcs8' }),
      publicKey: createPublicKey({ key: Buffer.concat([SPKI_X25519, publicKey]), format: 'der', type: 'spki' }),
    });
  } catch {
    // OpenSSL refuses the derivation itself for low-order points.
    out = Buffer.alloc(32);
  }
  if (out.every((b) => b === 0)) throw new Error('X25519 produced an all-zero secret (low-order public key)');
  return out;
}

export const hash = (...parts: Uint8Array[]): Buffer => blake2s(parts, 32);
export const mac = (key: Uint8Array, ...parts: Uint8Array[]): Buffer => blake2s(parts, 16, key);
export const hmac = (key: Uint8Array, ...parts: Uint8Array[]): Buffer => {
  const h = createHmac('blake2s256', key);
  for (const p of parts) h.update(p);
  return h.digest();
};

/** KDF_n(key, input) of the whitepaper: HKDF with HMAC-BLAKE2s, n outputs of 32 bytes. */
export function kdf(n: 1 | 2 | 3, key: Uint8Array, input: Uint8Array): Buffer[] {
  const prk = hmac(key, input);
  const out: Buffer[] = [];
  let prev: Buffer = Buffer.alloc(0);
  for (let i = 1; i <= n; i++) {
    prev = hmac(prk, prev, Buffer.from([i]));
    out.push(prev);
  }
  return out;
}

/** The 96-bit nonce of a counter: 32 zero bits, then the counter little-endian. */
export function counterNonce(counter: bigint): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64LE(counter, 4);
  return n;
}

export function aeadSeal(key: Uint8Array, counter: bigint, plaintext: Uint8Array, aad: Uint8Array): Buffer {
  return sealNonce(key, counterNonce(counter), plaintext, aad);
}

/** null when the tag does not verify. */
export function aeadOpen(key: Uint8Array, counter: bigint, ciphertext: Uint8Array, aad: Uint8Array): Buffer | null {
  return openNonce(key, counterNonce(counter), ciphertext, aad);
}

function sealNonce(key: Uint8Array, nonce: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Buffer {
  const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_LEN });
  c.setAAD(aad, { plaintextLength: plaintext.length });
  return Buffer.concat([c.update(plaintext), c.final(), c.getAuthTag()]);
}

function openNonce(key: Uint8Array, nonce: Uint8Array, ciphertext: Uint8Array, aad: Uint8Array): Buffer | null {
  if (ciphertext.length < TAG_LEN) return null;
  const body = ciphertext.subarray(0, ciphertext.length - TAG_LEN);
  const d = createDecipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG_LEN });
  d.setAAD(aad, { plaintextLength: body.length });
  d.setAuthTag(ciphertext.subarray(ciphertext.length - TAG_LEN));
  const out = d.update(body);
  try {
    d.final();
  } catch {
    return null;
  }
  return out;
}

const rotl = (x: number, n: number) => (x << n) | (x >>> (32 - n));

/** HChaCha20(key, 16-byte nonce): the XChaCha20 subkey. */
export function hchacha20(key: Uint8Array, nonce16: Uint8Array): Buffer {
  const s = new Uint32Array(16);
  s[0] = 0x61707865;
  s[1] = 0x3320646e;
  s[2] = 0x79622d32;
  s[3] = 0x6b206574;
  const kv = Buffer.from(key.buffer, key.byteOffset, 32);
  const nv = Buffer.from(nonce16.buffer, nonce16.byteOffset, 16);
  for (let i = 0; i < 8; i++) s[4 + i] = kv.readUInt32LE(i * 4);
  for (let i = 0; i < 4; i++) s[12 + i] = nv.readUInt32LE(i * 4);
  const qr = (a: number, b: number, c: number, d: number) => {
    s[a] = s[a]! + s[b]!;
    s[d] = rotl(s[d]! ^ s[a]!, 16);
    s[c] = s[c]! + s[d]!;
    s[b] = rotl(s[b]! ^ s[c]!, 12);
    s[a] = s[a]! + s[b]!;
    s[d] = rotl(s[d]! ^ s[a]!, 8);
    s[c] = s[c]! + s[d]!;
    s[b] = rotl(s[b]! ^ s[c]!, 7);
  };
  for (let i = 0; i < 10; i++) {
    qr(0, 4, 8, 12);
    qr(1, 5, 9, 13);
    qr(2, 6, 10, 14);
    qr(3, 7, 11, 15);
    qr(0, 5, 10, 15);
    qr(1, 6, 11, 12);
    qr(2, 7, 8, 13);
    qr(3, 4, 9, 14);
  }
  const out = Buffer.alloc(32);
  for (let i = 0; i < 4; i++) out.writeUInt32LE(s[i]!, i * 4);
  for (let i = 0; i < 4; i++) out.writeUInt32LE(s[12 + i]!, 16 + i * 4);
  return out;
}

function xnonce(nonce24: Uint8Array): { sub: Uint8Array; nonce: Buffer } {
  const nonce = Buffer.alloc(12);
  nonce.set(nonce24.subarray(16, 24), 4);
  return { sub: nonce24.subarray(0, 16), nonce };
}

export function xaeadSeal(key: Uint8Array, nonce24: Uint8Array, plaintext: Uint8Array, aad: Uint8Array): Buffer {
  const { sub, nonce } = xnonce(nonce24);
  return sealNonce(hchacha20(key, sub), nonce, plaintext, aad);
}

export function xaeadOpen(key: Uint8Array, nonce24: Uint8Array, ciphertext: Uint8Array, aad: Uint8Array): Buffer | null {
  const { sub, nonce } = xnonce(nonce24);
  return openNonce(hchacha20(key, sub), nonce, ciphertext, aad);
}

/** TAI64N of now: 8 bytes of seconds (2^62 + Unix seconds) and 4 of nanoseconds, big-endian. */
export function tai64n(nowMs = Date.now()): Buffer {
  const out = Buffer.alloc(12);
  const secs = Math.floor(nowMs / 1000);
  out.writeBigUInt64BE(0x400000000000000an + BigInt(secs), 0);
  // Whole milliseconds only: a finer clock would tell an observer more about the host than it needs to.
  out.writeUInt32BE((nowMs % 1000) * 1_000_000, 8);
  return out;
}

export const randomIndex = (): number => randomBytes(4).readUInt32LE(0);
export const equal = (a: Uint8Array, b: Uint8Array): boolean => a.length === b.length && timingSafeEqual(a, b);
