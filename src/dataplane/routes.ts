/**
 * The udp backend's route table, shared between the main thread (the only
 * writer, following lease events) and the packet workers (readers).
 *
 * It lives in a SharedArrayBuffer guarded by a sequence counter
 * (seqlock.ts). A worker compares the counter once per batch and, only
 * when it moved, copies the table and rebuilds its private hash indexes.
 */
import { mask4 } from '../net/ipaddr.js';
import { publishUnderSeqlock, SEQ_WORD, SharedTableReader, tableCapacity } from './seqlock.js';

export interface RouteEntry {
  /** Remote subnet network address (u32) and prefix length. */
  net: number;
  prefixLen: number;
  /** Peer's PublicIP (u32) and UDP port. */
  peer: number;
  port: number;
}

export interface RouteTableState {
  /** Our own lease subnet: the only destination accepted from the tunnel. */
  ownNet: number;
  ownPrefixLen: number;
  /** The flannel Network, used to tell "no lease" from "not ours at all". */
  network: number;
  networkPrefixLen: number;
  /** Source address of the ICMP errors we synthesise. */
  icmpSource: number;
  routes: RouteEntry[];
}

const H_GEN = SEQ_WORD;
const H_COUNT = 1;
const H_OWN = 2;
const H_OWN_LEN = 3;
const H_NET = 4;
const H_NET_LEN = 5;
const H_ICMP_SRC = 6;
const HEADER_WORDS = 8;
const ENTRY_WORDS = 4;

export const DEFAULT_ROUTE_CAPACITY = 65536;

export function createRouteTableBuffer(capacity = DEFAULT_ROUTE_CAPACITY): SharedArrayBuffer {
  return new SharedArrayBuffer((HEADER_WORDS + capacity * ENTRY_WORDS) * 4);
}

/** Main-thread side: publishes whole tables. */
export class RouteTableWriter {
  private readonly words: Uint32Array;
  readonly capacity: number;

  constructor(readonly sab: SharedArrayBuffer) {
    this.words = new Uint32Array(sab);
    this.capacity = tableCapacity(this.words, HEADER_WORDS, ENTRY_WORDS);
  }

  /** Replace the table. Throws when it holds more routes than the buffer has room for. */
  publish(state: RouteTableState): void {
    if (state.routes.length > this.capacity) {
      throw new Error(`route table full: ${state.routes.length} routes, capacity ${this.capacity}`);
    }
    const w = this.words;
    publishUnderSeqlock(w, () => {
      w[H_COUNT] = state.routes.length;
      w[H_OWN] = state.ownNet >>> 0;
      w[H_OWN_LEN] = state.ownPrefixLen;
      w[H_NET] = state.network >>> 0;
      w[H_NET_LEN] = state.networkPrefixLen;
      w[H_ICMP_SRC] = state.icmpSource >>> 0;
      let p = HEADER_WORDS;
      for (const r of state.routes) {
        w[p] = r.net >>> 0;
        w[p + 1] = r.prefixLen;
        w[p + 2] = r.peer >>> 0;
        w[p + 3] = r.port;
        p += ENTRY_WORDS;
      }
    });
  }

  get generation(): number {
    return Atomics.load(this.words, H_GEN);
  }
}

/**
 * Open-addressing hash from (u32 key, small tag) to an entry index, in typed
 * arrays so a lookup touches no JS objects and allocates nothing (u32 keys
 * above 2^30 would be boxed as heap numbers by a Map).
 */
export class U32Index {
  private readonly keys: Uint32Array;
  private readonly tags: Uint8Array;
  private readonly vals: Int32Array;
  private readonly shift: number;
  private readonly mask: number;

  constructor(entries: number) {
    let bits = 4;
    while (1 << bits < entries * 2) bits++;
    this.keys = new Uint32Array(1 << bits);
    this.tags = new Uint8Array(1 << bits);
    this.vals = new Int32Array(1 << bits);
    this.shift = 32 - bits;
    this.mask = (1 << bits) - 1;
  }

  private slot(key: number, tag: number): number {
    return Math.imul((key ^ Math.imul(tag, 0x27d4eb2d)) | 0, 0x9e3779b1) >>> this.shift;
  }

  /** tag must be 1..255 (0 marks an empty slot). Keeps the first value for a duplicate key. */
  insert(key: number, tag: number, val: number): void {
    let s = this.slot(key, tag);
    while (this.tags[s] !== 0) {
      if (this.tags[s] === tag && this.keys[s] === key) return;
      s = (s + 1) & this.mask;
    }
    this.keys[s] = key;
    this.tags[s] = tag;
    this.vals[s] = val;
  }

  get(key: number, tag: number): number {
    let s = this.slot(key, tag);
    for (;;) {
      const t = this.tags[s]!;
      if (t === 0) return -1;
      if (t === tag && this.keys[s] === key) return this.vals[s]!;
      s = (s + 1) & this.mask;
    }
  }
}

/**
 * Entries by peer: the first entry of each peer (address or endpoint id),
 * and from each entry the next one of the same peer (a peer may hold
 * several subnets), for the source checks of both route tables.
 */
export class PeerEntries {
  private readonly first: U32Index;
  private readonly next: Int32Array;

  constructor(peers: Uint32Array, n: number) {
    this.first = new U32Index(n);
    this.next = new Int32Array(n).fill(-1);
    const lastOfPeer = new Map<number, number>();
    for (let i = 0; i < n; i++) {
      const peer = peers[i]!;
      const last = lastOfPeer.get(peer);
      if (last === undefined) this.first.insert(peer, 1, i);
      else this.next[last] = i;
      lastOfPeer.set(peer, i);
    }
  }

  /** The peer's first entry, or -1. */
  firstOf(peer: number): number {
    return this.first.get(peer, 1);
  }

  /** The peer's entry after entry i, or -1. */
  nextOf(i: number): number {
    return this.next[i]!;
  }
}

/** Result of checking an inner source address against the sending peer. */
export const enum SourceCheck {
  Allowed = 0,
  /** The datagram's address is no peer we know. */
  UnknownPeer = 1,
  /** A known peer sent a packet from outside its own subnet(s). */
  Spoofed = 2,
}

/** Worker side: a private snapshot of the table, refreshed between batches. */
export class RouteTableReader extends SharedTableReader {

  ownNet = 0;
  ownMask = 0xffffffff;
  network = 0;
  networkMask = 0xffffffff;
  icmpSource = 0;
  count = 0;

  /** Per entry, indexed by lookup() results. */
  nets = new Uint32Array(0);
  prefixLens = new Uint8Array(0);
  peers = new Uint32Array(0);
  ports = new Uint16Array(0);
  /** Distinct prefix lengths, longest first: lookups try each in turn (usually just one). */
  private lengths = new Uint8Array(0);
  private lengthMasks = new Uint32Array(0);
  private byNet = new U32Index(0);
  private byPeer = new PeerEntries(new Uint32Array(0), 0);

  constructor(sab: SharedArrayBuffer) {
    super(sab);
    this.refresh();
  }

  protected snapshot(): void {
    const w = this.words;
    const count = Math.min(Atomics.load(w, H_COUNT), tableCapacity(w, HEADER_WORDS, ENTRY_WORDS));
    this.ownNet = Atomics.load(w, H_OWN);
    const ownLen = Atomics.load(w, H_OWN_LEN);
    this.ownMask = mask4(Math.min(ownLen, 32));
    this.network = Atomics.load(w, H_NET);
    this.networkMask = mask4(Math.min(Atomics.load(w, H_NET_LEN), 32));
    this.icmpSource = Atomics.load(w, H_ICMP_SRC);
    if (this.nets.length < count) {
      this.nets = new Uint32Array(count);
      this.prefixLens = new Uint8Array(count);
      this.peers = new Uint32Array(count);
      this.ports = new Uint16Array(count);
    }
    let p = HEADER_WORDS;
    for (let i = 0; i < count; i++, p += ENTRY_WORDS) {
      this.nets[i] = Atomics.load(w, p);
      this.prefixLens[i] = Math.min(Atomics.load(w, p + 1), 32);
      this.peers[i] = Atomics.load(w, p + 2);
      this.ports[i] = Atomics.load(w, p + 3);
    }
    this.count = count;
  }

  protected buildIndexes(): void {
    const n = this.count;
    const seen = new Set<number>();
    for (let i = 0; i < n; i++) seen.add(this.prefixLens[i]!);
    const lens = [...seen].sort((a, b) => b - a);
    this.lengths = Uint8Array.from(lens);
    this.lengthMasks = Uint32Array.from(lens, (l) => mask4(l));
    this.byNet = new U32Index(n);
    // Tag = prefix length + 1 so /0 still differs from an empty slot.
    for (let i = 0; i < n; i++) this.byNet.insert((this.nets[i]! & mask4(this.prefixLens[i]!)) >>> 0, this.prefixLens[i]! + 1, i);
    this.byPeer = new PeerEntries(this.peers, n);
  }


  /** Longest-prefix match of a destination; the entry index or -1. */
  lookup(dst: number): number {
    const lengths = this.lengths;
    for (let k = 0; k < lengths.length; k++) {
      const idx = this.byNet.get((dst & this.lengthMasks[k]!) >>> 0, lengths[k]! + 1);
      if (idx >= 0) return idx;
    }
    return -1;
  }

  isOwn(addr: number): boolean {
    return ((addr & this.ownMask) >>> 0) === this.ownNet;
  }

  inNetwork(addr: number): boolean {
    return ((addr & this.networkMask) >>> 0) === this.network;
  }

  /** May `peer` (outer source of a datagram) send packets from inner source `src`? */
  checkSource(peer: number, src: number): SourceCheck {
    let i = this.byPeer.firstOf(peer);
    if (i < 0) return SourceCheck.UnknownPeer;
    do {
      if (((src & mask4(this.prefixLens[i]!)) >>> 0) === this.nets[i]) return SourceCheck.Allowed;
      i = this.byPeer.nextOf(i);
    } while (i >= 0);
    return SourceCheck.Spoofed;
  }
}
