/**
 * The WireGuard state the packet workers need, in shared memory: the main
 * thread (handshakes, timers) is the only writer of keys and peer
 * references; the senders (the tx worker, and the rx worker when it sends
 * the kernel's replies itself) take send counters with Atomics.add, so a
 * nonce is never used twice, and stamp send times; the rx worker stamps
 * receive times and marks a responder's keypair confirmed. Nothing crosses
 * postMessage per packet.
 *
 * Keypairs (a finished handshake's keys) live in slots; the low 16 bits of
 * our receiver index are the slot, so the rx worker finds a keypair with
 * one array read and checks the whole index against the slot. A keypair is
 * written completely before a peer refers to it (Atomics.store of the
 * reference publishes the plain writes before it). A freed slot is marked
 * invalid at once (no new batch picks it) but keeps its keys through a
 * quarantine; they are erased only when the slot leaves it, so a worker
 * that picked the keypair before the free finishes its batch under the
 * real keys, never under zeros, and seal/open re-check the slot's
 * generation after the AEAD call.
 *
 * Times are monotonic milliseconds (clock.ts), the same in every thread.
 */

import { REJECT_AFTER_TIME } from './messages.js';

export const KEYPAIR_CAPACITY = 4096;
/**
 * Send counters are 32-bit here (an Atomics.add that allocates nothing, on
 * the packet path): a keypair lives at most REJECT_AFTER_TIME (180 s), and
 * 2^32 packets in 180 s would be 24 million packets a second. A keypair
 * whose counter nears the limit is treated as exhausted (a new handshake),
 * which the protocol allows: its limits are upper bounds.
 */
export const COUNTER_LIMIT = 2 ** 32 - 2 ** 13;
export const PEER_CAPACITY = 1024;
export const NO_KEYPAIR = -1;

/** Keypair words (Int32). */
const K_STATE = 0; // 0 free, 1 valid
const K_FLAGS = 1; // bit 0 initiator, bit 1 confirmed (the peer used it: a responder may send)
const K_PEER = 2;
const K_LOCAL = 3;
const K_REMOTE = 4;
const K_GEN = 5;
const K_WORDS = 8;
export const KeypairFlag = { Initiator: 1, Confirmed: 2 } as const;

/** Peer words (Int32). */
const P_ADDR = 0;
const P_PORT = 1;
const P_CURRENT = 2;
const P_PREVIOUS = 3;
const P_NEXT = 4;
/** Set by the tx worker: a packet found no usable or a stale keypair; cleared by the main thread. */
const P_WANT_HANDSHAKE = 5;
const P_ACTIVE = 6;
const P_WORDS = 8;
/** Peer times (Float64, monotonic ms: clock.ts). */
const T_SENT = 0;
const T_DATA_SENT = 1;
const T_RECV = 2;
const T_DATA_RECV = 3;
/**
 * Bytes for `wg show`: received (rx worker), sent by the tx worker, by the
 * rx worker's reply path, and by the main thread (handshakes, keepalives).
 * Each word has one writer (a Float64 add is not atomic); txBytes sums the
 * three senders.
 */
const T_TX_BYTES = 4;
const T_RX_BYTES = 5;
const T_TX_BYTES_REPLY = 6;
const T_TX_BYTES_MAIN = 7;
const T_WORDS = 8;

/** Which sender's byte count a stampSent adds to (each has its own word). */
export const enum SentBytesBy {
  TxWorker = 0,
  RxWorker = 1,
  MainThread = 2,
}
/** The word of each SentBytesBy. */
const SENT_BYTES_WORD = [T_TX_BYTES, T_TX_BYTES_REPLY, T_TX_BYTES_MAIN] as const;

/** Table header (Int32): generation, bumped whenever peers or their keypairs change. */
const H_GEN = 0;
/** Handshake datagrams posted by the rx worker and not yet taken by the main thread: the hand-off's bound. */
const H_HANDSHAKES_QUEUED = 1;
const HEADER_WORDS = 4;

export interface PeerTableBuffers {
  header: SharedArrayBuffer;
  keypairs: SharedArrayBuffer;
  created: SharedArrayBuffer;
  counters: SharedArrayBuffer;
  sendKeys: SharedArrayBuffer;
  recvKeys: SharedArrayBuffer;
  peers: SharedArrayBuffer;
  times: SharedArrayBuffer;
}

export function createPeerTableBuffers(keypairs = KEYPAIR_CAPACITY, peers = PEER_CAPACITY): PeerTableBuffers {
  return {
    header: new SharedArrayBuffer(HEADER_WORDS * 4),
    keypairs: new SharedArrayBuffer(keypairs * K_WORDS * 4),
    created: new SharedArrayBuffer(keypairs * 8),
    counters: new SharedArrayBuffer(keypairs * 4),
    sendKeys: new SharedArrayBuffer(keypairs * 32),
    recvKeys: new SharedArrayBuffer(keypairs * 32),
    peers: new SharedArrayBuffer(peers * P_WORDS * 4),
    times: new SharedArrayBuffer(peers * T_WORDS * 8),
  };
}

/** Views over the buffers, for either side. */
export class PeerTable {
  readonly header: Int32Array;
  readonly keypairs: Int32Array;
  readonly created: Float64Array;
  readonly sendCounters: Uint32Array;
  /** Keys as the addon takes them: slot k's key at 32 * k. */
  readonly sendKeys: Uint8Array;
  readonly recvKeys: Uint8Array;
  readonly peers: Int32Array;
  readonly times: Float64Array;
  readonly keypairCapacity: number;
  readonly peerCapacity: number;

  constructor(readonly buffers: PeerTableBuffers) {
    this.header = new Int32Array(buffers.header);
    this.keypairs = new Int32Array(buffers.keypairs);
    this.created = new Float64Array(buffers.created);
    this.sendCounters = new Uint32Array(buffers.counters);
    this.sendKeys = new Uint8Array(buffers.sendKeys);
    this.recvKeys = new Uint8Array(buffers.recvKeys);
    this.peers = new Int32Array(buffers.peers);
    this.times = new Float64Array(buffers.times);
    this.keypairCapacity = this.keypairs.length / K_WORDS;
    this.peerCapacity = this.peers.length / P_WORDS;
  }

  get generation(): number {
    return Atomics.load(this.header, H_GEN);
  }

  bump(): void {
    Atomics.add(this.header, H_GEN, 1);
  }

  // ---- keypairs ----
  keypairValid(k: number): boolean {
    return k >= 0 && k < this.keypairCapacity && Atomics.load(this.keypairs, k * K_WORDS + K_STATE) === 1;
  }
  keypairFlags(k: number): number {
    return Atomics.load(this.keypairs, k * K_WORDS + K_FLAGS);
  }
  keypairPeer(k: number): number {
    return this.keypairs[k * K_WORDS + K_PEER]!;
  }
  localIndex(k: number): number {
    return this.keypairs[k * K_WORDS + K_LOCAL]! >>> 0;
  }
  remoteIndex(k: number): number {
    return this.keypairs[k * K_WORDS + K_REMOTE]! >>> 0;
  }
  keypairGeneration(k: number): number {
    return Atomics.load(this.keypairs, k * K_WORDS + K_GEN);
  }
  /** rx worker: the peer sent with this keypair, so its responder side may now send too. */
  confirm(k: number): void {
    Atomics.or(this.keypairs, k * K_WORDS + K_FLAGS, KeypairFlag.Confirmed);
  }
  /** Main thread: fill a free slot, then mark it valid. */
  writeKeypair(k: number, peer: number, localIndex: number, remoteIndex: number, sendKey: Uint8Array, recvKey: Uint8Array, initiator: boolean, nowMs: number): void {
    const w = k * K_WORDS;
    this.keypairs[w + K_PEER] = peer;
    this.keypairs[w + K_LOCAL] = localIndex | 0;
    this.keypairs[w + K_REMOTE] = remoteIndex | 0;
    this.created[k] = nowMs;
    Atomics.store(this.sendCounters, k, 0);
    this.sendKeys.set(sendKey, k * 32);
    this.recvKeys.set(recvKey, k * 32);
    Atomics.store(this.keypairs, w + K_FLAGS, initiator ? KeypairFlag.Initiator : 0);
    Atomics.add(this.keypairs, w + K_GEN, 1);
    Atomics.store(this.keypairs, w + K_STATE, 1);
  }
  /** Main thread: the keypair is no longer to be used; its keys stay until eraseKeys (after the quarantine). */
  clearKeypair(k: number): void {
    const w = k * K_WORDS;
    Atomics.store(this.keypairs, w + K_STATE, 0);
    Atomics.add(this.keypairs, w + K_GEN, 1);
  }
  /** Main thread: erase a cleared slot's keys, once no worker can still be in a batch that picked it. */
  eraseKeys(k: number): void {
    this.sendKeys.fill(0, k * 32, k * 32 + 32);
    this.recvKeys.fill(0, k * 32, k * 32 + 32);
  }
  /** Reserve `n` send counters of keypair k; returns the first. */
  takeCounters(k: number, n: number): number {
    return Atomics.add(this.sendCounters, k, n);
  }
  counterOf(k: number): number {
    return Atomics.load(this.sendCounters, k);
  }

  // ---- peers ----
  peerActive(p: number): boolean {
    return Atomics.load(this.peers, p * P_WORDS + P_ACTIVE) === 1;
  }
  endpointAddr(p: number): number {
    return Atomics.load(this.peers, p * P_WORDS + P_ADDR) >>> 0;
  }
  endpointPort(p: number): number {
    return Atomics.load(this.peers, p * P_WORDS + P_PORT);
  }
  /** The keypair slots of a peer: current, previous, next (NO_KEYPAIR when none). */
  current(p: number): number {
    return Atomics.load(this.peers, p * P_WORDS + P_CURRENT);
  }
  previous(p: number): number {
    return Atomics.load(this.peers, p * P_WORDS + P_PREVIOUS);
  }
  next(p: number): number {
    return Atomics.load(this.peers, p * P_WORDS + P_NEXT);
  }
  /** rx worker (roaming) or main thread: the peer is now reached at addr:port. */
  setEndpoint(p: number, addr: number, port: number): void {
    Atomics.store(this.peers, p * P_WORDS + P_ADDR, addr | 0);
    Atomics.store(this.peers, p * P_WORDS + P_PORT, port);
  }
  setPeer(p: number, addr: number, port: number, active: boolean): void {
    const w = p * P_WORDS;
    Atomics.store(this.peers, w + P_ADDR, addr | 0);
    Atomics.store(this.peers, w + P_PORT, port);
    if (!active) for (const f of [P_CURRENT, P_PREVIOUS, P_NEXT]) Atomics.store(this.peers, w + f, NO_KEYPAIR);
    Atomics.store(this.peers, w + P_WANT_HANDSHAKE, 0);
    Atomics.store(this.peers, w + P_ACTIVE, active ? 1 : 0);
    if (!active) this.times.fill(0, p * T_WORDS, p * T_WORDS + T_WORDS);
  }
  /**
   * The keypair to send with now: the newer of next and current among those
   * we may use (ours as initiator, or confirmed by the peer; not expired, not
   * out of counters), or NO_KEYPAIR. The packet workers and the keepalives
   * of the main thread choose the same way.
   */
  sendKeypair(p: number, nowMs: number): number {
    const next = this.usable(this.next(p), nowMs);
    const current = this.usable(this.current(p), nowMs);
    if (next === NO_KEYPAIR) return current;
    if (current === NO_KEYPAIR) return next;
    return this.created[next]! > this.created[current]! ? next : current;
  }

  private usable(k: number, nowMs: number): number {
    if (k === NO_KEYPAIR || !this.keypairValid(k)) return NO_KEYPAIR;
    if (!(this.keypairFlags(k) & (KeypairFlag.Initiator | KeypairFlag.Confirmed))) return NO_KEYPAIR;
    if (nowMs - this.created[k]! >= REJECT_AFTER_TIME || this.counterOf(k) >= COUNTER_LIMIT) return NO_KEYPAIR;
    return k;
  }

  /** Forget keypair k wherever peer p refers to it. */
  dropKeypair(p: number, k: number): void {
    const w = p * P_WORDS;
    for (const f of [P_CURRENT, P_PREVIOUS, P_NEXT]) if (Atomics.load(this.peers, w + f) === k) Atomics.store(this.peers, w + f, NO_KEYPAIR);
  }

  setKeypairs(p: number, current: number, previous: number, next: number): void {
    const w = p * P_WORDS;
    Atomics.store(this.peers, w + P_CURRENT, current);
    Atomics.store(this.peers, w + P_PREVIOUS, previous);
    Atomics.store(this.peers, w + P_NEXT, next);
  }
  wantHandshake(p: number): void {
    Atomics.store(this.peers, p * P_WORDS + P_WANT_HANDSHAKE, 1);
  }
  /** Main thread: read and clear the tx worker's request. */
  takeHandshakeWish(p: number): boolean {
    return Atomics.exchange(this.peers, p * P_WORDS + P_WANT_HANDSHAKE, 0) === 1;
  }

  // ---- the handshake hand-off (rx worker -> main thread) ----
  /** rx worker: reserve a place in the hand-off queue; false when `limit` are already waiting. */
  reserveHandshake(limit: number): boolean {
    for (;;) {
      const q = Atomics.load(this.header, H_HANDSHAKES_QUEUED);
      if (q >= limit) return false;
      if (Atomics.compareExchange(this.header, H_HANDSHAKES_QUEUED, q, q + 1) === q) return true;
    }
  }
  /** Main thread: one handed-over handshake taken. */
  handshakeTaken(): void {
    if (Atomics.sub(this.header, H_HANDSHAKES_QUEUED, 1) <= 0) Atomics.store(this.header, H_HANDSHAKES_QUEUED, 0);
  }
  get handshakesQueued(): number {
    return Atomics.load(this.header, H_HANDSHAKES_QUEUED);
  }

  // ---- times (one writer per field) ----
  stampSent(p: number, nowMs: number, data: boolean, bytes = 0, by: SentBytesBy = SentBytesBy.TxWorker): void {
    this.times[p * T_WORDS + T_SENT] = nowMs;
    if (data) this.times[p * T_WORDS + T_DATA_SENT] = nowMs;
    // Only the owner of a word adds to it.
    if (bytes > 0) {
      const w = p * T_WORDS + SENT_BYTES_WORD[by];
      this.times[w] = this.times[w]! + bytes;
    }
  }
  stampReceived(p: number, nowMs: number, data: boolean, bytes = 0): void {
    this.times[p * T_WORDS + T_RECV] = nowMs;
    if (data) this.times[p * T_WORDS + T_DATA_RECV] = nowMs;
    this.times[p * T_WORDS + T_RX_BYTES] = this.times[p * T_WORDS + T_RX_BYTES]! + bytes;
  }
  txBytes(p: number): number {
    let sum = 0;
    for (const w of SENT_BYTES_WORD) sum += this.times[p * T_WORDS + w]!;
    return sum;
  }
  rxBytes(p: number): number {
    return this.times[p * T_WORDS + T_RX_BYTES]!;
  }
  lastSent(p: number): number {
    return this.times[p * T_WORDS + T_SENT]!;
  }
  lastDataSent(p: number): number {
    return this.times[p * T_WORDS + T_DATA_SENT]!;
  }
  lastReceived(p: number): number {
    return this.times[p * T_WORDS + T_RECV]!;
  }
  lastDataReceived(p: number): number {
    return this.times[p * T_WORDS + T_DATA_RECV]!;
  }
}

/**
 * The table's record layout for native/hop_wg.c, which reads and stamps
 * the same words (its enum L_* lists them in this order); `by` names the
 * sent-bytes word of the worker it runs in.
 */
export function nativeLayout(by: SentBytesBy): Int32Array {
  return Int32Array.from([
    K_WORDS, K_STATE, K_FLAGS, K_PEER, K_LOCAL, K_REMOTE, K_GEN,
    P_WORDS, P_ADDR, P_PORT, P_CURRENT, P_NEXT, P_WANT_HANDSHAKE, P_ACTIVE,
    T_WORDS, T_SENT, T_DATA_SENT, T_RECV, T_DATA_RECV, T_RX_BYTES, SENT_BYTES_WORD[by],
  ]);
}

/** The slot a receiver index names (its low 16 bits), or -1 when out of range. */
export function slotOfIndex(index: number, capacity: number): number {
  const s = index & 0xffff;
  return s < capacity ? s : -1;
}
