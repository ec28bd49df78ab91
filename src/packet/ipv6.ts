/**
 * IPv6 header access on raw packet bytes, for the packet path (the
 * wireguard backend's flannel-wg-v6). As ipv4.ts: (buffer, offset) pairs,
 * nothing allocated. An address is four u32 words in host order, most
 * significant first, so prefixes are compared word by word.
 */
import { readU16, readU32 } from './ipv4.js';

export const IPV6_HEADER = 40;
/** Offsets of the source and destination addresses in the fixed header. */
export const IPV6_SRC = 8;
export const IPV6_DST = 24;

export const enum Ipv6Check {
  Ok = 0,
  TooShort = 1,
  NotIPv6 = 2,
  BadPayloadLength = 3,
}

/**
 * A fixed header that is IPv6 and whose payload length fits the `len`
 * bytes read. Extension headers are the endpoints' business: nothing here
 * looks past the fixed header.
 */
export function checkIPv6(buf: Uint8Array, off: number, len: number): Ipv6Check {
  if (len < IPV6_HEADER) return len > 0 && buf[off]! >>> 4 !== 6 ? Ipv6Check.NotIPv6 : Ipv6Check.TooShort;
  if (buf[off]! >>> 4 !== 6) return Ipv6Check.NotIPv6;
  if (IPV6_HEADER + readU16(buf, off + 4) > len) return Ipv6Check.BadPayloadLength;
  return Ipv6Check.Ok;
}

/** The packet's own length (header + payload), without what follows it in the read. */
export function ipv6Length(buf: Uint8Array, off: number): number {
  return IPV6_HEADER + readU16(buf, off + 4);
}

export function hopLimit(buf: Uint8Array, off: number): number {
  return buf[off + 7]!;
}

/** IPv6 has no header checksum: the hop limit is one byte to rewrite. */
export function decrementHopLimit(buf: Uint8Array, off: number): void {
  buf[off + 7] = buf[off + 7]! - 1;
}

/** ff00::/8 (a destination only; no unicast route covers it). */
export function isMulticast6(buf: Uint8Array, addrOff: number): boolean {
  return buf[addrOff] === 0xff;
}

/** Word k (0..3) of the address at addrOff. */
export function addrWord(buf: Uint8Array, addrOff: number, k: number): number {
  return readU32(buf, addrOff + 4 * k);
}
