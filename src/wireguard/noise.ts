/**
 * The Noise_IKpsk2 handshake as WireGuard specifies it (whitepaper 5.4.2 -
 * 5.4.5): building and consuming the initiation and the response, and the
 * transport keys they leave. Pure functions over the local identity and a
 * per-peer state; no I/O, no timers, no mac1/mac2 (cookie.ts adds and
 * checks those on the finished message bytes).
 */
import { aeadOpen, aeadSeal, dh, equal, generateKeyPair, hash, kdf, tai64n, type KeyPair } from './primitives.js';
import { CONSTRUCTION, IDENTIFIER, Init, INITIATION_LEN, MessageType, Resp, RESPONSE_LEN } from './messages.js';

const EMPTY = Buffer.alloc(0);
const ZERO_KEY = Buffer.alloc(32);
const INITIAL_CHAIN = hash(Buffer.from(CONSTRUCTION));
const INITIAL_HASH = hash(INITIAL_CHAIN, Buffer.from(IDENTIFIER));

export interface Identity {
  staticPrivate: Buffer;
  staticPublic: Buffer;
}

/** What an initiator keeps between sending its initiation and receiving the response. */
export interface InitiatorState {
  localIndex: number;
  chain: Buffer;
  hash: Buffer;
  ephemeral: KeyPair;
  remoteStatic: Buffer;
}

/** Keys of a finished handshake (a "keypair" in wireguard-go's words). */
export interface TransportKeys {
  sendKey: Buffer;
  recvKey: Buffer;
  localIndex: number;
  remoteIndex: number;
  initiator: boolean;
}

/** The responder's precomputed mixHash of its own static key (same for every initiation). */
export function responderHashStart(staticPublic: Uint8Array): Buffer {
  return hash(INITIAL_HASH, staticPublic);
}

/**
 * Build an initiation to `remoteStatic` (148 bytes, mac1/mac2 left zero).
 * `ephemeral` and `now` are for known-answer tests; fresh ones otherwise.
 */
export function createInitiation(id: Identity, remoteStatic: Buffer, localIndex: number, ephemeral: KeyPair = generateKeyPair(), nowMs = Date.now()): { message: Buffer; state: InitiatorState } {
  // No PSK here: psk2 mixes it in at the response.
  const msg = Buffer.alloc(INITIATION_LEN);
  msg[0] = MessageType.Initiation;
  msg.writeUInt32LE(localIndex >>> 0, Init.sender);
  let h = hash(INITIAL_HASH, remoteStatic);
  let c: Buffer = INITIAL_CHAIN;
  [c] = kdf(1, c, ephemeral.publicKey) as [Buffer];
  ephemeral.publicKey.copy(msg, Init.ephemeral);
  h = hash(h, ephemeral.publicKey);
  let k: Buffer;
  [c, k] = kdf(2, c, dh(ephemeral.privateKey, remoteStatic)) as [Buffer, Buffer];
  const encStatic = aeadSeal(k, 0n, id.staticPublic, h);
  encStatic.copy(msg, Init.static);
  h = hash(h, encStatic);
  [c, k] = kdf(2, c, dh(id.staticPrivate, remoteStatic)) as [Buffer, Buffer];
  const encTime = aeadSeal(k, 0n, tai64n(nowMs), h);
  encTime.copy(msg, Init.timestamp);
  h = hash(h, encTime);
  return { message: msg, state: { localIndex, chain: c, hash: h, ephemeral, remoteStatic } };
}

/** What the responder learns from a valid initiation. */
export interface ConsumedInitiation {
  remoteStatic: Buffer;
  remoteIndex: number;
  remoteEphemeral: Buffer;
  timestamp: Buffer;
  chain: Buffer;
  hash: Buffer;
}

/** Decrypt and check an initiation sent to us; null when it does not authenticate. */
export function consumeInitiation(id: Identity, msg: Buffer): ConsumedInitiation | null {
  if (msg.length !== INITIATION_LEN || msg[0] !== MessageType.Initiation) return null;
  const remoteEphemeral = Buffer.from(msg.subarray(Init.ephemeral, Init.ephemeral + 32));
  let h = hash(INITIAL_HASH, id.staticPublic);
  let c: Buffer = INITIAL_CHAIN;
  [c] = kdf(1, c, remoteEphemeral) as [Buffer];
  h = hash(h, remoteEphemeral);
  let k: Buffer;
  try {
    [c, k] = kdf(2, c, dh(id.staticPrivate, remoteEphemeral)) as [Buffer, Buffer];
  } catch {
    return null;
  }
  const encStatic = msg.subarray(Init.static, Init.static + 48);
  const remoteStatic = aeadOpen(k, 0n, encStatic, h);
  if (!remoteStatic) return null;
  h = hash(h, encStatic);
  try {
    [c, k] = kdf(2, c, dh(id.staticPrivate, remoteStatic)) as [Buffer, Buffer];
  } catch {
    return null;
  }
  const encTime = msg.subarray(Init.timestamp, Init.timestamp + 28);
  const timestamp = aeadOpen(k, 0n, encTime, h);
  if (!timestamp) return null;
  h = hash(h, encTime);
  return { remoteStatic, remoteIndex: msg.readUInt32LE(Init.sender), remoteEphemeral, timestamp, chain: c, hash: h };
}

/** Build the response to a consumed initiation (92 bytes, macs zero) and the transport keys it yields. */
export function createResponse(init: ConsumedInitiation, localIndex: number, psk: Buffer | null, ephemeral: KeyPair = generateKeyPair()): { message: Buffer; keys: TransportKeys } {
  const msg = Buffer.alloc(RESPONSE_LEN);
  msg[0] = MessageType.Response;
  msg.writeUInt32LE(localIndex >>> 0, Resp.sender);
  msg.writeUInt32LE(init.remoteIndex >>> 0, Resp.receiver);
  let c = init.chain;
  let h = init.hash;
  [c] = kdf(1, c, ephemeral.publicKey) as [Buffer];
  ephemeral.publicKey.copy(msg, Resp.ephemeral);
  h = hash(h, ephemeral.publicKey);
  [c] = kdf(1, c, dh(ephemeral.privateKey, init.remoteEphemeral)) as [Buffer];
  [c] = kdf(1, c, dh(ephemeral.privateKey, init.remoteStatic)) as [Buffer];
  let tau: Buffer;
  let k: Buffer;
  [c, tau, k] = kdf(3, c, psk ?? ZERO_KEY) as [Buffer, Buffer, Buffer];
  h = hash(h, tau);
  const empty = aeadSeal(k, 0n, EMPTY, h);
  empty.copy(msg, Resp.empty);
  const [recvKey, sendKey] = kdf(2, c, EMPTY) as [Buffer, Buffer];
  return { message: msg, keys: { sendKey, recvKey, localIndex, remoteIndex: init.remoteIndex, initiator: false } };
}

/** Check a response against our pending initiation; the transport keys, or null when it does not authenticate. */
export function consumeResponse(id: Identity, state: InitiatorState, msg: Buffer, psk: Buffer | null): TransportKeys | null {
  if (msg.length !== RESPONSE_LEN || msg[0] !== MessageType.Response) return null;
  if (msg.readUInt32LE(Resp.receiver) !== state.localIndex >>> 0) return null;
  const remoteEphemeral = msg.subarray(Resp.ephemeral, Resp.ephemeral + 32);
  let c = state.chain;
  let h = state.hash;
  [c] = kdf(1, c, remoteEphemeral) as [Buffer];
  h = hash(h, remoteEphemeral);
  try {
    [c] = kdf(1, c, dh(state.ephemeral.privateKey, remoteEphemeral)) as [Buffer];
    [c] = kdf(1, c, dh(id.staticPrivate, remoteEphemeral)) as [Buffer];
  } catch {
    return null;
  }
  let tau: Buffer;
  let k: Buffer;
  [c, tau, k] = kdf(3, c, psk ?? ZERO_KEY) as [Buffer, Buffer, Buffer];
  h = hash(h, tau);
  const empty = aeadOpen(k, 0n, msg.subarray(Resp.empty, Resp.empty + 16), h);
  if (!empty || empty.length !== 0) return null;
  const [sendKey, recvKey] = kdf(2, c, EMPTY) as [Buffer, Buffer];
  return { sendKey, recvKey, localIndex: state.localIndex, remoteIndex: msg.readUInt32LE(Resp.sender), initiator: true };
}

/** TAI64N timestamps compare as big-endian bytes: a replayed initiation is not newer. */
export function timestampNewer(ts: Uint8Array, than: Uint8Array | null): boolean {
  return than === null || Buffer.compare(Buffer.from(ts), Buffer.from(than)) > 0;
}

export { equal };
