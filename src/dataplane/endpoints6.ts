/**
 * IPv6 endpoints by id, for a dataplane on an IPv6 socket. The packet path
 * names a datagram's destination with one u32 (PacketBatch.addrs); on an
 * IPv6 socket that u32 is an id into this table, a SharedArrayBuffer of 16
 * bytes per id that the addon reads when it sends (udpSend's endpoints6).
 * The main thread is the only writer.
 *
 * Ids of lease endpoints stay with their address while a holder (the route
 * table, the WireGuard peers) holds them; a released id is reused only after
 * REUSE_AFTER_MS, long after every worker has moved to a route table
 * without it (workers refresh between batches, at least every poll). A
 * small ring of further ids names the sources of handshakes from addresses
 * that are no lease's endpoint, so a reply (a cookie reply, a response to a
 * peer that moved) can be sent there; the ring is reused in turn and never
 * grows, whatever a flood of spoofed sources does.
 */
import { formatIP6, isIP4, parseIP4, parseIP6 } from '../net/ipaddr.js';

/** An endpoint's IPv6 socket address: IPv6 as it is, IPv4 as ::ffff:a.b.c.d (a dual-stack socket reaches it so). */
export function endpointAddress6(text: string): bigint {
  return isIP4(text) ? (0xffffn << 32n) | BigInt(parseIP4(text)) : parseIP6(text);
}

/** The text of an endpoint address: IPv4-mapped ones as the IPv4 address. */
export function endpointText6(addr: bigint): string {
  return addr >> 32n === 0xffffn ? `${Number((addr >> 24n) & 0xffn)}.${Number((addr >> 16n) & 0xffn)}.${Number((addr >> 8n) & 0xffn)}.${Number(addr & 0xffn)}` : formatIP6(addr);
}

/** The 16 address bytes at `at` as a number. */
function addressAt(bytes: Uint8Array, at: number): bigint {
  let v = 0n;
  for (let i = 0; i < 16; i++) v = (v << 8n) | BigInt(bytes[at + i]!);
  return v;
}

/** Every lease endpoint id is taken (and none was released long enough ago to reuse). */
export class EndpointIdsExhausted extends Error {}

/** Id 0 is never handed out: udpRecv reports 0 for "no id". */
const FIRST_ID = 1;
const REUSE_AFTER_MS = 10_000;
export const DEFAULT_LEASE_ENDPOINTS = 65536;
export const TRANSIENT_ENDPOINTS = 1024;

export class EndpointTable6 {
  readonly sab: SharedArrayBuffer;
  /** The table as the addon reads it (udpSend's endpoints6). */
  readonly bytes: Uint8Array;
  private readonly byAddr = new Map<string, number>();
  private readonly addrOf = new Map<number, string>();
  private readonly released: { id: number; at: number }[] = [];
  private readonly holders = new Map<string, Set<number>>();
  private nextFresh = FIRST_ID;
  private nextTransient = 0;
  private readonly leaseCapacity: number;

  constructor(
    leaseCapacity = DEFAULT_LEASE_ENDPOINTS,
    private readonly transient = TRANSIENT_ENDPOINTS,
    private readonly now: () => number = Date.now,
  ) {
    this.leaseCapacity = leaseCapacity;
    this.sab = new SharedArrayBuffer(16 * (FIRST_ID + leaseCapacity + transient));
    this.bytes = new Uint8Array(this.sab);
  }

  /** idOf an endpoint written as text (IPv4 text as its ::ffff:a.b.c.d address); throws as idOf and on text that is no address. */
  idOfText(text: string): number {
    return this.idOf(endpointAddress6(text));
  }

  /** The id of a lease endpoint (allocated on first use); throws EndpointIdsExhausted when every id is taken. */
  idOf(addr: bigint): number {
    const key = formatIP6(addr);
    const have = this.byAddr.get(key);
    if (have !== undefined) return have;
    const id = this.allocate();
    this.write(id, addr);
    this.byAddr.set(key, id);
    this.addrOf.set(id, key);
    return id;
  }

  private allocate(): number {
    if (this.nextFresh < FIRST_ID + this.leaseCapacity) return this.nextFresh++;
    const r = this.released[0];
    if (r && this.now() - r.at >= REUSE_AFTER_MS) return this.released.shift()!.id;
    throw new EndpointIdsExhausted(`no free IPv6 endpoint id (${this.leaseCapacity} lease endpoints in use or released in the last ${REUSE_AFTER_MS / 1000} s)`);
  }

  /**
   * What `holder` still uses (replacing what it held before); the ids of
   * lease endpoints no holder uses any longer are released.
   */
  hold(holder: string, ids: Iterable<number>): void {
    this.holders.set(holder, new Set(ids));
    const held = new Set<number>();
    for (const h of this.holders.values()) for (const id of h) held.add(id);
    for (const [id, key] of this.addrOf) {
      if (held.has(id)) continue;
      this.addrOf.delete(id);
      this.byAddr.delete(key);
      this.released.push({ id, at: this.now() });
    }
  }

  /**
   * An id for the source of a received datagram (16 bytes): the lease
   * endpoint's id when it is one, else the next id of the transient ring.
   */
  idForSource(src: Uint8Array): number {
    const have = this.byAddr.get(formatIP6(addressAt(src, 0)));
    if (have !== undefined) return have;
    const id = FIRST_ID + this.leaseCapacity + this.nextTransient;
    this.nextTransient = (this.nextTransient + 1) % this.transient;
    this.bytes.set(src.subarray(0, 16), 16 * id);
    return id;
  }

  /** The address an id names, as text (logs, `wg show`; an IPv4-mapped one as the IPv4 address). */
  text(id: number): string {
    return endpointText6(addressAt(this.bytes, 16 * id));
  }

  private write(id: number, addr: bigint): void {
    for (let i = 15, v = addr; i >= 0; i--, v >>= 8n) this.bytes[16 * id + i] = Number(v & 0xffn);
  }
}
