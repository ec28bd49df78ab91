/**
 * WireGuard on the userspace dataplane's packet path: the Encapsulation the
 * packet workers call between routing and the socket (see
 * dataplane/encapsulation.ts). Routes name peers by their slot in the
 * PeerTable, one per public key; seal picks the peer's keypair and sends to
 * the peer's current endpoint, open labels each packet with the slot of
 * the peer whose keypair opened it, so the source check that follows
 * accepts only inner sources inside that key's allowed IPs (cryptokey
 * routing, whatever the outer address), and moves the peer's endpoint to
 * the source of its last authenticated packet (roaming). The AEAD runs in
 * the addon, one call per batch (native/crypto.c).
 *
 * Handshake messages are handed to the main thread, which owns the Noise
 * state, in this order of defences: mac1 is checked here first (a keyed
 * BLAKE2s: a sender that does not know our public key spends nothing), then
 * a per-source budget (ratelimiter.ts), then a per-second budget for all,
 * and the hand-off queue is bounded (PeerTable.reserveHandshake). What is
 * shed is counted.
 */
import type { NativeAddon, WireGuardHopSpec } from '../native/addon.js';
import type { Encapsulation, EncapsulationEnv } from '../dataplane/encapsulation.js';
import type { PacketBatch } from '../tun/packet-batch.js';
import { MessageType, REJECT_AFTER_TIME, REKEY_AFTER_TIME, TRANSPORT_OVERHEAD, messageType, INITIATION_LEN, RESPONSE_LEN, COOKIE_REPLY_LEN } from './messages.js';
import { COUNTER_LIMIT, KeypairFlag, nativeLayout, NO_KEYPAIR, PeerTable, SentBytesBy, slotOfIndex, type PeerTableBuffers } from './peer-table.js';
import { ReplayWindows } from './replay.js';
import { WgCounter, wgCounterRegion, WG_REGION_RX, WG_REGION_TX } from './counters.js';
import { CookieChecker } from './cookie.js';
import { SourceRateLimiter, sourceKey6 } from './ratelimiter.js';
import { CLOCK_OFFSET_MS, monotonicMs } from './clock.js';

/** Handshake datagrams per second handed to the main thread, all sources together; more are dropped before any DH. */
export const HANDSHAKE_BACKLOG = 2000;
/** Handshake datagrams handed over and not yet handled: more are shed (the main thread is behind). */
export const HANDSHAKE_QUEUE_LIMIT = 256;
/** Cookie replies (no mac1 to check) per second handed over, all sources together. */
const COOKIE_REPLY_BUDGET = 100;
/** Roaming notes per peer posted at most this often (IPv6 endpoints, which the main thread names). */
const ROAM_NOTE_INTERVAL_MS = 1000;
const FAILED = 0xffffffff;

export interface WireGuardWorkerConfig {
  table: PeerTableBuffers;
  /** WireGuard counters (counters.ts); each worker writes its own region. */
  counters: SharedArrayBuffer;
  /** Our static public key (mac1 of messages to us is keyed by it). */
  publicKey: Uint8Array;
  /** The device's MTU, which padding never exceeds (0: no cap). */
  mtu?: number;
}

/** What the transport posts to the main thread. */
export type TransportNote =
  | { type: 'handshake'; data: Uint8Array; addr: number; port: number; source6?: Uint8Array }
  /** An authenticated packet of peer `peer` came from an IPv6 source other than its endpoint. */
  | { type: 'roam'; peer: number; port: number; source6: Uint8Array };

/** The factory the packet workers load (EncapsulationSpec.module). */
export function createEncapsulation(addon: NativeAddon, config: unknown, env: EncapsulationEnv): Encapsulation {
  const wg = config as WireGuardWorkerConfig;
  const stats = wgCounterRegion(wg.counters, env.role === 'tx' ? WG_REGION_TX : WG_REGION_RX);
  return new WireGuardTransport(addon, wg, stats, (note) => env.post(note), monotonicMs, undefined, env.role === 'tx' ? SentBytesBy.TxWorker : SentBytesBy.RxWorker, env.endpoints6);
}

export class WireGuardTransport implements Encapsulation {
  readonly bareInner = false;
  private readonly t: PeerTable;
  private keyIdx: Uint32Array;
  /** Per slot being sealed or opened: the keypair generation it was picked at. */
  private keyGen: Int32Array;
  private receivers: Uint32Array;
  private nonces: BigUint64Array;
  /** The nonces as 32-bit words (low, high): filled without BigInt on the packet path. */
  private nonceWords: Uint32Array;
  private counters: Float64Array;
  /** The peer of each slot being sealed. */
  private peerOf: Int32Array;
  /** Per keypair slot: its replay window (rx only; made on first use, shared with native/hop_wg.c). */
  private windows: ReplayWindows | null = null;
  private handshakeBudget = HANDSHAKE_BACKLOG;
  private cookieBudget = COOKIE_REPLY_BUDGET;
  private readonly mtu: number;
  private budgetSecond = 0;
  private readonly checker: CookieChecker;
  private readonly perSource = new SourceRateLimiter();
  /** Per peer slot: when a roaming note was last posted. */
  private readonly roamNoted: Float64Array;

  constructor(
    private readonly addon: NativeAddon,
    cfg: WireGuardWorkerConfig,
    private readonly stats: Float64Array,
    /** Handshakes and roaming notes for the main thread (on an IPv6 socket a source is its 16 bytes, addr then 0). */
    private readonly post: (note: TransportNote) => void = () => {},
    private readonly now: () => number = monotonicMs,
    capacity = 1024,
    /** The sender this transport seals for (its own byte-count word in the peer table). */
    private readonly sentBy: SentBytesBy = SentBytesBy.TxWorker,
    /** On an IPv6 socket: the endpoint table peer addresses are ids into (roaming compares sources with it). */
    private readonly endpoints6: Uint8Array | null = null,
  ) {
    this.t = new PeerTable(cfg.table);
    this.mtu = cfg.mtu ?? 0;
    this.checker = new CookieChecker(cfg.publicKey);
    this.roamNoted = new Float64Array(this.t.peerCapacity);
    this.keyIdx = new Uint32Array(capacity);
    this.keyGen = new Int32Array(capacity);
    this.receivers = new Uint32Array(capacity);
    this.nonces = new BigUint64Array(capacity);
    this.nonceWords = new Uint32Array(this.nonces.buffer);
    this.counters = new Float64Array(capacity);
    this.peerOf = new Int32Array(capacity);
  }

  private grow(n: number): void {
    if (n <= this.keyIdx.length) return;
    this.keyIdx = new Uint32Array(n);
    this.keyGen = new Int32Array(n);
    this.receivers = new Uint32Array(n);
    this.nonces = new BigUint64Array(n);
    this.nonceWords = new Uint32Array(this.nonces.buffer);
    this.counters = new Float64Array(n);
    this.peerOf = new Int32Array(n);
  }

  seal(batch: PacketBatch, n: number): number {
    if (n === 0) return 0;
    this.grow(n);
    const { lens, addrs, buf, slotSize } = batch;
    const nowMs = this.now();
    let out = 0;
    let lastPeer = -1;
    let lastKey = NO_KEYPAIR;
    for (let i = 0; i < n; i++) {
      // The route names the peer by its key's slot.
      const p = addrs[i]!;
      if (p >= this.t.peerCapacity || !this.t.peerActive(p)) {
        this.stats[WgCounter.dropUnknownPeer]! += 1;
        continue;
      }
      let k = lastKey;
      if (p !== lastPeer) {
        k = this.t.sendKeypair(p, nowMs);
        lastPeer = p;
        lastKey = k;
        if (k !== NO_KEYPAIR) {
          // Time to rekey: the initiator of the keypair asks for a new handshake, and keeps sending meanwhile.
          const old = this.t.keypairFlags(k) & KeypairFlag.Initiator && nowMs - this.t.created[k]! >= REKEY_AFTER_TIME;
          if (old || this.t.counterOf(k) >= COUNTER_LIMIT / 2) this.t.wantHandshake(p);
        }
      }
      if (k === NO_KEYPAIR) {
        this.t.wantHandshake(p);
        this.stats[WgCounter.dropNoSession]! += 1;
        continue;
      }
      if (out !== i) batch.moveSlot(i, out);
      this.keyIdx[out] = k;
      this.keyGen[out] = this.t.keypairGeneration(k);
      this.receivers[out] = this.t.remoteIndex(k);
      this.nonceWords[2 * out] = this.t.takeCounters(k, 1);
      this.nonceWords[2 * out + 1] = 0;
      this.peerOf[out] = p;
      out++;
    }
    if (out === 0) return 0;
    this.addon.wgSeal(buf, slotSize, lens, out, this.t.sendKeys, this.keyIdx, this.receivers, this.nonces, this.mtu);
    // A packet that no longer fits its slot once sealed (lens 0) is dropped. Sent bytes are counted as
    // wireguard-go counts them for `wg show`: whole datagrams (header, padded ciphertext, tag).
    let kept = 0;
    for (let i = 0; i < out; i++) {
      if (lens[i] === 0) {
        this.stats[WgCounter.dropTooBig]! += 1;
        continue;
      }
      // Freed while we sealed: its keys may be erased or reused; what was sealed must not leave.
      if (this.t.keypairGeneration(this.keyIdx[i]!) !== this.keyGen[i] || !this.t.keypairValid(this.keyIdx[i]!)) {
        this.stats[WgCounter.dropKeypairGone]! += 1;
        continue;
      }
      const p = this.peerOf[i]!;
      this.t.stampSent(p, nowMs, true, lens[i]!, this.sentBy);
      if (kept !== i) batch.moveSlot(i, kept);
      addrs[kept] = this.t.endpointAddr(p);
      batch.ports[kept] = this.t.endpointPort(p);
      kept++;
    }
    this.stats[WgCounter.sealed]! += kept;
    return kept;
  }

  open(batch: PacketBatch, n: number): number {
    if (n === 0) return 0;
    this.grow(n);
    const { lens, addrs, buf, slotSize } = batch;
    const nowMs = this.now();
    this.refillBudgets(nowMs);
    for (let i = 0; i < n; i++) {
      this.keyIdx[i] = FAILED;
      const off = i * slotSize;
      const len = lens[i]!;
      const type = len >= 4 && len <= slotSize ? messageType(buf, off) : 0;
      if (type === MessageType.Transport) {
        if (len < TRANSPORT_OVERHEAD) {
          this.stats[WgCounter.dropMalformed]! += 1;
          continue;
        }
        const receiver = buf.readUInt32LE(off + 4);
        const k = slotOfIndex(receiver, this.t.keypairCapacity);
        if (k < 0 || !this.t.keypairValid(k) || this.t.localIndex(k) !== receiver) {
          this.stats[WgCounter.dropStaleSession]! += 1;
          continue;
        }
        if (nowMs - this.t.created[k]! >= REJECT_AFTER_TIME) {
          this.stats[WgCounter.dropStaleSession]! += 1;
          continue;
        }
        this.keyIdx[i] = k;
        this.keyGen[i] = this.t.keypairGeneration(k);
        this.counters[i] = buf.readUInt32LE(off + 12) * 0x100000000 + buf.readUInt32LE(off + 8);
        continue;
      }
      if ((type === MessageType.Initiation && len === INITIATION_LEN) || (type === MessageType.Response && len === RESPONSE_LEN) || (type === MessageType.CookieReply && len === COOKIE_REPLY_LEN)) {
        this.handHandshake(buf.subarray(off, off + len), type, addrs[i]!, batch.ports[i]!, nowMs, batch.sources6?.subarray(16 * i, 16 * i + 16));
        continue;
      }
      this.stats[WgCounter.dropMalformed]! += 1;
    }
    // Slots without a key fail inside the call (lens = FAILED) without any AEAD work.
    this.addon.wgOpen(buf, slotSize, lens, n, this.t.recvKeys, this.keyIdx);
    let out = 0;
    for (let i = 0; i < n; i++) {
      const k = this.keyIdx[i]!;
      if (k === FAILED) continue;
      if (lens[i] === FAILED) {
        this.stats[WgCounter.dropBadMac]! += 1;
        continue;
      }
      // Freed while we opened (its keys may be erased or reused): nothing it opened is trusted.
      if (this.t.keypairGeneration(k) !== this.keyGen[i] || !this.t.keypairValid(k)) {
        this.stats[WgCounter.dropKeypairGone]! += 1;
        continue;
      }
      if (!this.replayWindows().accept(k, this.keyGen[i]!, this.counters[i]!)) {
        this.stats[WgCounter.dropReplay]! += 1;
        continue;
      }
      const p = this.t.keypairPeer(k);
      if (!(this.t.keypairFlags(k) & (KeypairFlag.Initiator | KeypairFlag.Confirmed))) this.t.confirm(k);
      this.roam(p, addrs[i]!, batch.ports[i]!, batch.sources6, i, nowMs);
      const len = lens[i]!;
      if (len === 0) {
        this.t.stampReceived(p, nowMs, false, TRANSPORT_OVERHEAD);
        this.stats[WgCounter.keepalivesReceived]! += 1;
        continue;
      }
      this.t.stampReceived(p, nowMs, true, len + TRANSPORT_OVERHEAD);
      this.stats[WgCounter.opened]! += 1;
      const off = i * slotSize;
      // The inner packet's own length, without WireGuard's padding (IPv4 total length, IPv6 40 + payload length).
      const version = buf[off]! >> 4;
      const inner =
        version === 4 && len >= 20
          ? Math.min(len, (buf[off + 2]! << 8) | buf[off + 3]!)
          : version === 6 && len >= 40
            ? Math.min(len, 40 + ((buf[off + 4]! << 8) | buf[off + 5]!))
            : len;
      if (out !== i) buf.copyWithin(out * slotSize, off, off + inner);
      lens[out] = inner;
      // Cryptokey routing: the source checks that follow judge the packet by the key that opened it.
      addrs[out] = p;
      out++;
    }
    return out;
  }

  private replayWindows(): ReplayWindows {
    this.windows ??= new ReplayWindows(this.t.keypairCapacity);
    return this.windows;
  }

  /**
   * What native/hop_wg.c needs to seal and open lone packets as this
   * transport does (hopCreate's spec.wg), or null where it cannot: an IPv6
   * socket, whose endpoints the main thread names.
   */
  nativeHop(): WireGuardHopSpec | null {
    if (this.endpoints6) return null;
    const t = this.t;
    // Only the rx worker opens; a sender's hop needs no windows.
    const w = this.sentBy === SentBytesBy.RxWorker ? this.replayWindows() : new ReplayWindows(0);
    return {
      layout: nativeLayout(this.sentBy),
      counterIndexes: Int32Array.from([
        WgCounter.sealed,
        WgCounter.opened,
        WgCounter.keepalivesReceived,
        WgCounter.dropBadMac,
        WgCounter.dropKeypairGone,
        WgCounter.dropReplay,
        WgCounter.roamed,
        WgCounter.dropTooBig,
      ]),
      keypairs: t.keypairs,
      created: t.created,
      sendCounters: t.sendCounters,
      sendKeys: t.sendKeys,
      recvKeys: t.recvKeys,
      peers: t.peers,
      times: t.times,
      stats: this.stats,
      replayBits: w.bits,
      replayTop: w.top,
      replayGen: w.gen,
      mtu: this.mtu,
      rekeyAfterMs: REKEY_AFTER_TIME,
      rejectAfterMs: REJECT_AFTER_TIME,
      clockOffsetMs: CLOCK_OFFSET_MS,
      counterLimit: COUNTER_LIMIT,
    };
  }

  private refillBudgets(nowMs: number): void {
    const second = Math.floor(nowMs / 1000);
    if (second === this.budgetSecond) return;
    this.budgetSecond = second;
    this.handshakeBudget = HANDSHAKE_BACKLOG;
    this.cookieBudget = COOKIE_REPLY_BUDGET;
  }

  /**
   * A handshake datagram: mac1 first (no budget is spent on a sender that
   * does not know our key), then its source's budget, then everyone's, then
   * a place in the bounded hand-off queue. Cookie replies carry no mac1:
   * a small budget of their own, so they never spend the initiations'.
   */
  private handHandshake(msg: Uint8Array, type: number, addr: number, port: number, nowMs: number, source6?: Uint8Array): void {
    if (type === MessageType.CookieReply) {
      if (this.cookieBudget <= 0) {
        this.stats[WgCounter.dropHandshakeBacklog]! += 1;
        return;
      }
      this.cookieBudget--;
    } else {
      if (!this.checker.checkMac1(msg)) {
        this.stats[WgCounter.dropBadMac]! += 1;
        return;
      }
      if (!this.perSource.allow(source6 ? sourceKey6(source6) : addr, nowMs)) {
        this.stats[WgCounter.dropHandshakeRateLimited]! += 1;
        return;
      }
      if (this.handshakeBudget <= 0) {
        this.stats[WgCounter.dropHandshakeBacklog]! += 1;
        return;
      }
      this.handshakeBudget--;
    }
    if (!this.t.reserveHandshake(HANDSHAKE_QUEUE_LIMIT)) {
      this.stats[WgCounter.dropHandshakeBacklog]! += 1;
      return;
    }
    this.post({ type: 'handshake', data: Uint8Array.from(msg), addr, port, ...(source6 ? { source6: Uint8Array.from(source6) } : {}) });
  }

  /**
   * WireGuard's roaming: a peer's endpoint follows the source of its last
   * authenticated packet. An IPv4 source is written into the peer table
   * here; an IPv6 one is posted (the main thread names it by an endpoint
   * id), at most once a second per peer.
   */
  private roam(p: number, addr: number, port: number, sources6: Uint8Array | null, i: number, nowMs: number): void {
    const e6 = this.endpoints6;
    if (!e6 || !sources6) {
      if (addr === this.t.endpointAddr(p) && port === this.t.endpointPort(p)) return;
      this.t.setEndpoint(p, addr, port);
      this.stats[WgCounter.roamed]! += 1;
      return;
    }
    const at = 16 * this.t.endpointAddr(p);
    let same = port === this.t.endpointPort(p) && at + 16 <= e6.length;
    for (let b = 0; same && b < 16; b++) same = e6[at + b] === sources6[16 * i + b];
    if (same || nowMs - this.roamNoted[p]! < ROAM_NOTE_INTERVAL_MS) return;
    this.roamNoted[p] = nowMs;
    this.post({ type: 'roam', peer: p, port, source6: sources6.slice(16 * i, 16 * i + 16) });
  }
}
