/**
 * The IPv6 route table of a userspace dataplane carrying IPv6 pods (the
 * wireguard backend's flannel-wg-v6): remote /64s (any prefix length) to
 * endpoint ids. Shared and versioned exactly as the IPv4 table (routes.ts:
 * one writer on the main thread, a sequence counter, workers copying it
 * between batches when it moved); addresses are four u32 words.
 *
 * The endpoint an entry names is an id into the dataplane's endpoint table
 * (endpoints6.ts), not an address: the packet path keeps one u32 per
 * destination whatever the family, and the addon turns ids into IPv6
 * socket addresses when it sends.
 */
import { mask4 } from '../net/ipaddr.js';
import { PeerEntries, SourceCheck } from './routes.js';
import { publishUnderSeqlock, SharedTableReader, tableCapacity } from './seqlock.js';
import { addrWord, IPV6_DST, IPV6_SRC } from '../packet/ipv6.js';

/** An IPv6 prefix as four u32 words (most significant first) and its length. */
export interface Net6Words {
  words: [number, number, number, number];
  prefixLen: number;
}

export interface Route6Entry extends Net6Words {
  /** Endpoint id of the peer host (endpoints6.ts) and its UDP port. */
  peer: number;
  port: number;
}

export interface RouteTable6State {
  /** Our own lease subnet: the only destination accepted from the tunnel. */
  own: Net6Words;
  routes: Route6Entry[];
}

/** The words of an IPv6 address given as a bigint. */
export function words6(ip: bigint): [number, number, number, number] {
  return [Number((ip >> 96n) & 0xffffffffn), Number((ip >> 64n) & 0xffffffffn), Number((ip >> 32n) & 0xffffffffn), Number(ip & 0xffffffffn)];
}

/** Mask of word k for a prefix length. */
function wordMask(prefixLen: number, k: number): number {
  return mask4(Math.max(0, Math.min(32, prefixLen - 32 * k)));
}

const H_COUNT = 1;
// Word 0 is the sequence counter (seqlock.ts).
const H_OWN = 2; // 4 words, then its length
const H_OWN_LEN = 6;
const HEADER_WORDS = 8;
const ENTRY_WORDS = 8; // 4 net words, length, peer, port, spare

export const DEFAULT_ROUTE6_CAPACITY = 65536;

export function createRouteTable6Buffer(capacity = DEFAULT_ROUTE6_CAPACITY): SharedArrayBuffer {
  return new SharedArrayBuffer((HEADER_WORDS + capacity * ENTRY_WORDS) * 4);
}

export class RouteTable6Writer {
  private readonly w: Uint32Array;
  readonly capacity: number;

  constructor(readonly sab: SharedArrayBuffer) {
    this.w = new Uint32Array(sab);
    this.capacity = tableCapacity(this.w, HEADER_WORDS, ENTRY_WORDS);
  }

  publish(state: RouteTable6State): void {
    if (state.routes.length > this.capacity) throw new Error(`IPv6 route table full: ${state.routes.length} routes, capacity ${this.capacity}`);
    const w = this.w;
    publishUnderSeqlock(w, () => {
      w[H_COUNT] = state.routes.length;
      w.set(state.own.words, H_OWN);
      w[H_OWN_LEN] = state.own.prefixLen;
      let p = HEADER_WORDS;
      for (const r of state.routes) {
        w.set(r.words, p);
        w[p + 4] = r.prefixLen;
        w[p + 5] = r.peer >>> 0;
        w[p + 6] = r.port;
        p += ENTRY_WORDS;
      }
    });
  }
}

/** Worker side: a private snapshot and a hash index per prefix length, refreshed between batches. */
export class RouteTable6Reader extends SharedTableReader {
  count = 0;
  /** Per entry: its four masked words at 4 * i, length, endpoint id, port. */
  nets = new Uint32Array(0);
  prefixLens = new Uint8Array(0);
  peers = new Uint32Array(0);
  ports = new Uint16Array(0);
  private readonly own = new Uint32Array(4);
  private readonly ownMask = new Uint32Array(4);
  /** Distinct prefix lengths, longest first, and their word masks (4 per length). */
  private lengths = new Uint8Array(0);
  private masks = new Uint32Array(0);
  /** Open addressing over (masked words, length) -> entry, as routes.ts's U32Index but with 4-word keys. */
  private slots = new Int32Array(0);
  private slotMask = 0;
  private byPeer = new PeerEntries(new Uint32Array(0), 0);

  constructor(sab: SharedArrayBuffer) {
    super(sab);
    this.refresh();
  }

  protected snapshot(): void {
    const w = this.words;
    const count = Math.min(Atomics.load(w, H_COUNT), tableCapacity(w, HEADER_WORDS, ENTRY_WORDS));
    const ownLen = Math.min(Atomics.load(w, H_OWN_LEN), 128);
    for (let k = 0; k < 4; k++) {
      this.ownMask[k] = wordMask(ownLen, k);
      this.own[k] = (Atomics.load(w, H_OWN + k) & this.ownMask[k]!) >>> 0;
    }
    if (this.prefixLens.length < count) {
      this.nets = new Uint32Array(4 * count);
      this.prefixLens = new Uint8Array(count);
      this.peers = new Uint32Array(count);
      this.ports = new Uint16Array(count);
    }
    let p = HEADER_WORDS;
    for (let i = 0; i < count; i++, p += ENTRY_WORDS) {
      const len = Math.min(Atomics.load(w, p + 4), 128);
      for (let k = 0; k < 4; k++) this.nets[4 * i + k] = (Atomics.load(w, p + k) & wordMask(len, k)) >>> 0;
      this.prefixLens[i] = len;
      this.peers[i] = Atomics.load(w, p + 5);
      this.ports[i] = Atomics.load(w, p + 6);
    }
    this.count = count;
  }

  private hash(w0: number, w1: number, w2: number, w3: number, len: number): number {
    let h = Math.imul(w0 ^ 0x9e3779b9, 0x85ebca6b);
    h = Math.imul(h ^ w1, 0xc2b2ae35);
    h = Math.imul(h ^ w2, 0x27d4eb2d);
    h = Math.imul(h ^ w3 ^ (len << 24), 0x165667b1);
    return (h ^ (h >>> 15)) & this.slotMask;
  }

  protected buildIndexes(): void {
    const n = this.count;
    const lens = [...new Set(this.prefixLens.subarray(0, n))].sort((a, b) => b - a);
    this.lengths = Uint8Array.from(lens);
    this.masks = new Uint32Array(4 * lens.length);
    lens.forEach((l, j) => {
      for (let k = 0; k < 4; k++) this.masks[4 * j + k] = wordMask(l, k);
    });
    let size = 16;
    while (size < n * 2) size *= 2;
    this.slots = new Int32Array(size).fill(-1);
    this.slotMask = size - 1;
    const nets = this.nets;
    for (let i = 0; i < n; i++) {
      if (this.find(nets[4 * i]!, nets[4 * i + 1]!, nets[4 * i + 2]!, nets[4 * i + 3]!, this.prefixLens[i]!) >= 0) continue; // first wins
      let s = this.hash(nets[4 * i]!, nets[4 * i + 1]!, nets[4 * i + 2]!, nets[4 * i + 3]!, this.prefixLens[i]!);
      while (this.slots[s] !== -1) s = (s + 1) & this.slotMask;
      this.slots[s] = i;
    }
    this.byPeer = new PeerEntries(this.peers, n);
  }

  private find(w0: number, w1: number, w2: number, w3: number, len: number): number {
    const nets = this.nets;
    for (let s = this.hash(w0, w1, w2, w3, len); ; s = (s + 1) & this.slotMask) {
      const i = this.slots[s]!;
      if (i < 0) return -1;
      if (this.prefixLens[i] === len && nets[4 * i] === w0 && nets[4 * i + 1] === w1 && nets[4 * i + 2] === w2 && nets[4 * i + 3] === w3) return i;
    }
  }

  /** Longest-prefix match of the destination of the packet at off; the entry index or -1. */
  lookup(buf: Uint8Array, off: number): number {
    const a = off + IPV6_DST;
    const d0 = addrWord(buf, a, 0);
    const d1 = addrWord(buf, a, 1);
    const d2 = addrWord(buf, a, 2);
    const d3 = addrWord(buf, a, 3);
    const m = this.masks;
    for (let j = 0; j < this.lengths.length; j++) {
      const i = this.find((d0 & m[4 * j]!) >>> 0, (d1 & m[4 * j + 1]!) >>> 0, (d2 & m[4 * j + 2]!) >>> 0, (d3 & m[4 * j + 3]!) >>> 0, this.lengths[j]!);
      if (i >= 0) return i;
    }
    return -1;
  }

  /** Whether the address at addrOff lies in our own subnet. */
  isOwn(buf: Uint8Array, addrOff: number): boolean {
    for (let k = 0; k < 4; k++) if (((addrWord(buf, addrOff, k) & this.ownMask[k]!) >>> 0) !== this.own[k]) return false;
    return true;
  }

  /** May endpoint `peer` send packets whose source is that of the packet at off? */
  checkSource(peer: number, buf: Uint8Array, off: number): SourceCheck {
    let i = this.byPeer.firstOf(peer);
    if (i < 0) return SourceCheck.UnknownPeer;
    const a = off + IPV6_SRC;
    do {
      const len = this.prefixLens[i]!;
      let inside = true;
      for (let k = 0; k < 4 && inside; k++) inside = ((addrWord(buf, a, k) & wordMask(len, k)) >>> 0) === this.nets[4 * i + k];
      if (inside) return SourceCheck.Allowed;
      i = this.byPeer.nextOf(i);
    } while (i >= 0);
    return SourceCheck.Spoofed;
  }
}
