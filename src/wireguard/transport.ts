/**
 * WireGuard on the udp backend's packet path: the Encapsulation the packet
 * workers call between routing and the socket (see
 * backend/udp/encapsulation.ts). Peer lookup (the route's endpoint names
 * the peer), keypair choice, counters and replay windows are here; the AEAD
 * runs in the addon, one call per batch (native/crypto.c). Handshake
 * messages arriving on the socket are handed to the main thread
 * (`onHandshake`), which owns the Noise state; a flood of them beyond
 * HANDSHAKE_BACKLOG per second is dropped here and counted.
 */
import type { NativeAddon } from '../native/addon.js';
import type { Encapsulation } from '../backend/udp/encapsulation.js';
import type { PacketBatch } from '../tun/packet-batch.js';
import { MessageType, REJECT_AFTER_TIME, REKEY_AFTER_TIME, TRANSPORT_OVERHEAD, messageType, INITIATION_LEN, RESPONSE_LEN, COOKIE_REPLY_LEN } from './messages.js';
import { COUNTER_LIMIT, KeypairFlag, NO_KEYPAIR, PeerTable, SentBytesBy, slotOfIndex, type PeerTableBuffers } from './peer-table.js';
import { ReplayWindow } from './replay.js';
import { WgCounter } from './counters.js';

/** Handshake datagrams per second handed to the main thread; more are dropped before any work. */
export const HANDSHAKE_BACKLOG = 2000;
const FAILED = 0xffffffff;

export interface WireGuardWorkerConfig {
  table: PeerTableBuffers;
  /** WireGuard counters (counters.ts); each worker writes its own region. */
  counters: SharedArrayBuffer;
  /** The device's MTU, which padding never exceeds (0: no cap). */
  mtu?: number;
}

export class WireGuardTransport implements Encapsulation {
  readonly bareInner = false;
  private readonly t: PeerTable;
  private gen = -1;
  /** Endpoint address -> peer slot, rebuilt when the table's generation moves. */
  private byAddr = new Map<number, number>();
  private keyIdx: Uint32Array;
  private receivers: Uint32Array;
  private nonces: BigUint64Array;
  /** The nonces as 32-bit words (low, high): filled without BigInt on the packet path. */
  private nonceWords: Uint32Array;
  private counters: Float64Array;
  /** The peer of each slot being sealed. */
  private peerOf: Int32Array;
  /** Per keypair slot: its replay window and the keypair generation it belongs to (rx only). */
  private readonly windows: (ReplayWindow | undefined)[] = [];
  private readonly windowGen: number[] = [];
  private handshakeBudget = HANDSHAKE_BACKLOG;
  private readonly mtu: number;
  private budgetSecond = 0;

  constructor(
    private readonly addon: NativeAddon,
    cfg: WireGuardWorkerConfig,
    private readonly stats: Float64Array,
    /** source6: on an IPv6 socket, the datagram's 16-byte source (addr is then 0). */
    private readonly onHandshake: (msg: Buffer, addr: number, port: number, source6?: Uint8Array) => void = () => {},
    private readonly now: () => number = Date.now,
    capacity = 1024,
    /** The sender this transport seals for (its own byte-count word in the peer table). */
    private readonly sentBy: SentBytesBy = SentBytesBy.TxWorker,
  ) {
    this.t = new PeerTable(cfg.table);
    this.mtu = cfg.mtu ?? 0;
    this.keyIdx = new Uint32Array(capacity);
    this.receivers = new Uint32Array(capacity);
    this.nonces = new BigUint64Array(capacity);
    this.nonceWords = new Uint32Array(this.nonces.buffer);
    this.counters = new Float64Array(capacity);
    this.peerOf = new Int32Array(capacity);
  }

  private grow(n: number): void {
    if (n <= this.keyIdx.length) return;
    this.keyIdx = new Uint32Array(n);
    this.receivers = new Uint32Array(n);
    this.nonces = new BigUint64Array(n);
    this.nonceWords = new Uint32Array(this.nonces.buffer);
    this.counters = new Float64Array(n);
    this.peerOf = new Int32Array(n);
  }

  private refresh(): void {
    const g = this.t.generation;
    if (g === this.gen) return;
    this.gen = g;
    const m = new Map<number, number>();
    for (let p = 0; p < this.t.peerCapacity; p++) if (this.t.peerActive(p)) m.set(this.t.endpointAddr(p), p);
    this.byAddr = m;
  }

  seal(batch: PacketBatch, n: number): number {
    if (n === 0) return 0;
    this.refresh();
    this.grow(n);
    const { lens, addrs, buf, slotSize } = batch;
    const nowMs = this.now();
    let out = 0;
    let lastPeer = -1;
    let lastKey = NO_KEYPAIR;
    for (let i = 0; i < n; i++) {
      const p = this.byAddr.get(addrs[i]!);
      if (p === undefined) {
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
      this.t.stampSent(this.peerOf[i]!, nowMs, true, lens[i]!, this.sentBy);
      if (kept !== i) batch.moveSlot(i, kept);
      kept++;
    }
    this.stats[WgCounter.sealed]! += kept;
    return kept;
  }

  open(batch: PacketBatch, n: number): number {
    if (n === 0) return 0;
    this.refresh();
    this.grow(n);
    const { lens, addrs, buf, slotSize } = batch;
    const nowMs = this.now();
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
        this.counters[i] = buf.readUInt32LE(off + 12) * 0x100000000 + buf.readUInt32LE(off + 8);
        continue;
      }
      if ((type === MessageType.Initiation && len === INITIATION_LEN) || (type === MessageType.Response && len === RESPONSE_LEN) || (type === MessageType.CookieReply && len === COOKIE_REPLY_LEN)) {
        this.handHandshake(Buffer.from(buf.subarray(off, off + len)), addrs[i]!, batch.ports[i]!, nowMs, batch.sources6?.subarray(16 * i, 16 * i + 16));
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
      if (!this.window(k).accept(this.counters[i]!)) {
        this.stats[WgCounter.dropReplay]! += 1;
        continue;
      }
      const p = this.t.keypairPeer(k);
      if (!(this.t.keypairFlags(k) & (KeypairFlag.Initiator | KeypairFlag.Confirmed))) this.t.confirm(k);
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
      // Cryptokey routing: the source checks that follow judge the packet by the peer whose key opened it.
      addrs[out] = this.t.endpointAddr(p);
      batch.ports[out] = this.t.endpointPort(p);
      out++;
    }
    return out;
  }

  private window(k: number): ReplayWindow {
    const g = this.t.keypairGeneration(k);
    let w = this.windows[k];
    if (!w || this.windowGen[k] !== g) {
      w = new ReplayWindow();
      this.windows[k] = w;
      this.windowGen[k] = g;
    }
    return w;
  }

  private handHandshake(msg: Buffer, addr: number, port: number, nowMs: number, source6?: Uint8Array): void {
    const second = Math.floor(nowMs / 1000);
    if (second !== this.budgetSecond) {
      this.budgetSecond = second;
      this.handshakeBudget = HANDSHAKE_BACKLOG;
    }
    if (this.handshakeBudget <= 0) {
      this.stats[WgCounter.dropHandshakeBacklog]! += 1;
      return;
    }
    this.handshakeBudget--;
    this.onHandshake(msg, addr, port, source6);
  }
}
