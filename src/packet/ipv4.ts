/**
 * IPv4 header access on raw packet bytes, for the packet path.
 *
 * Everything works on (buffer, offset) pairs so the pipeline can operate on
 * the addon's slot buffers without creating views or objects per packet.
 * Addresses are u32 numbers in host order, as in src/net/ipaddr.ts.
 */

export const IPV4_MIN_HEADER = 20;
export const PROTO_ICMP = 1;

/** Why a packet failed validation; 0 means well-formed. */
export const enum Ipv4Check {
  Ok = 0,
  TooShort = 1,
  NotIPv4 = 2,
  BadHeaderLength = 3,
  BadTotalLength = 4,
  BadChecksum = 5,
}

export function readU32(buf: Uint8Array, off: number): number {
  return ((buf[off]! << 24) | (buf[off + 1]! << 16) | (buf[off + 2]! << 8) | buf[off + 3]!) >>> 0;
}

export function writeU32(buf: Uint8Array, off: number, v: number): void {
  buf[off] = v >>> 24;
  buf[off + 1] = (v >>> 16) & 255;
  buf[off + 2] = (v >>> 8) & 255;
  buf[off + 3] = v & 255;
}

export function readU16(buf: Uint8Array, off: number): number {
  return (buf[off]! << 8) | buf[off + 1]!;
}

export function writeU16(buf: Uint8Array, off: number, v: number): void {
  buf[off] = (v >>> 8) & 255;
  buf[off + 1] = v & 255;
}

export function headerLength(buf: Uint8Array, off: number): number {
  return (buf[off]! & 0x0f) * 4;
}
export function totalLength(buf: Uint8Array, off: number): number {
  return readU16(buf, off + 2);
}
export function ttl(buf: Uint8Array, off: number): number {
  return buf[off + 8]!;
}
export function protocol(buf: Uint8Array, off: number): number {
  return buf[off + 9]!;
}
export function srcAddr(buf: Uint8Array, off: number): number {
  return readU32(buf, off + 12);
}
export function dstAddr(buf: Uint8Array, off: number): number {
  return readU32(buf, off + 16);
}
/** Don't-Fragment bit. */
export function dontFragment(buf: Uint8Array, off: number): boolean {
  return (buf[off + 6]! & 0x40) !== 0;
}
/** Fragment offset in 8-byte units; non-zero means "not the first fragment". */
export function fragmentOffset(buf: Uint8Array, off: number): number {
  return readU16(buf, off + 6) & 0x1fff;
}

/** RFC 1071 one's-complement sum of `len` bytes, folded to 16 bits (not inverted). */
export function onesSum(buf: Uint8Array, off: number, len: number, initial = 0): number {
  let sum = initial;
  const end = off + (len & ~1);
  for (let i = off; i < end; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!;
  if (len & 1) sum += buf[off + len - 1]! << 8;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** The checksum to store in a header whose checksum field is zero. */
export function checksum(buf: Uint8Array, off: number, len: number): number {
  return ~onesSum(buf, off, len) & 0xffff;
}

/** A header with its checksum field included sums to 0xffff when intact. */
export function headerChecksumValid(buf: Uint8Array, off: number): boolean {
  return onesSum(buf, off, headerLength(buf, off)) === 0xffff;
}

/**
 * Structural checks of an IPv4 packet of `len` bytes at `off`.
 * `exactLength`: the total length field must equal len (a datagram carries
 * exactly one packet; trailing bytes mean a forged or corrupted payload).
 * `verifyChecksum`: skipped for packets the local kernel produced.
 */
export function checkIPv4(buf: Uint8Array, off: number, len: number, exactLength: boolean, verifyChecksum: boolean): Ipv4Check {
  if (len < IPV4_MIN_HEADER) return Ipv4Check.TooShort;
  const b0 = buf[off]!;
  if (b0 >>> 4 !== 4) return Ipv4Check.NotIPv4;
  const ihl = (b0 & 0x0f) * 4;
  if (ihl < IPV4_MIN_HEADER || ihl > len) return Ipv4Check.BadHeaderLength;
  const total = readU16(buf, off + 2);
  if (exactLength ? total !== len : total > len || total < ihl) return Ipv4Check.BadTotalLength;
  if (verifyChecksum && onesSum(buf, off, ihl) !== 0xffff) return Ipv4Check.BadChecksum;
  return Ipv4Check.Ok;
}

/**
 * Decrement TTL by one and patch the header checksum incrementally
 * (RFC 1624 eqn. 3: HC' = ~(~HC + ~m + m')), so forwarding costs a few
 * operations instead of a header re-sum. Caller ensures TTL > 1.
 */
export function decrementTtl(buf: Uint8Array, off: number): void {
  const oldWord = (buf[off + 8]! << 8) | buf[off + 9]!;
  buf[off + 8] = buf[off + 8]! - 1;
  const newWord = (buf[off + 8]! << 8) | buf[off + 9]!;
  let sum = (~readU16(buf, off + 10) & 0xffff) + (~oldWord & 0xffff) + newWord;
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  writeU16(buf, off + 10, ~sum & 0xffff);
}

/** Limited broadcast, multicast (224/4) and class E (240/4). */
export function isMulticastOrBroadcast(ip: number): boolean {
  return ip >>> 28 >= 0xe;
}
