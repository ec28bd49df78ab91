/**
 * ICMP error replies a userspace dataplane writes back into its TUN device, so local
 * senders learn at once that a destination has no lease (net unreachable),
 * that a packet must be smaller (fragmentation needed, which drives TCP path
 * MTU discovery), or that its TTL ran out (time exceeded, for traceroute).
 */
import {
  checksum,
  dstAddr,
  fragmentOffset,
  headerLength,
  isMulticastOrBroadcast,
  protocol,
  PROTO_ICMP,
  srcAddr,
  writeU16,
  writeU32,
} from './ipv4.js';

export const ICMP_DEST_UNREACHABLE = 3;
export const ICMP_TIME_EXCEEDED = 11;
export const CODE_NET_UNREACHABLE = 0;
export const CODE_FRAG_NEEDED = 4;
export const CODE_TTL_EXCEEDED = 0;

/** Largest reply: 20-byte IP + 8-byte ICMP + quoted 60-byte header + 8 bytes. */
export const ICMP_ERROR_MAX = 20 + 8 + 60 + 8;

/** ICMP types that are queries (echo, timestamp, ...); everything else counts as an error message. */
function isIcmpQuery(type: number): boolean {
  return type === 0 || type === 8 || (type >= 13 && type <= 18);
}

/**
 * RFC 1122 3.2.2 / RFC 1812 4.3.2.7: never answer an ICMP error with an ICMP
 * error (that is how storms start), nor a non-first fragment, a packet to a
 * multicast or broadcast address, or one whose source does not name a single
 * host we could answer.
 */
export function mayReplyWithIcmpError(buf: Uint8Array, off: number, len: number): boolean {
  const src = srcAddr(buf, off);
  if (src === 0 || isMulticastOrBroadcast(src) || src >>> 24 === 127) return false;
  if (isMulticastOrBroadcast(dstAddr(buf, off))) return false;
  if (fragmentOffset(buf, off) !== 0) return false;
  if (protocol(buf, off) === PROTO_ICMP) {
    const ihl = headerLength(buf, off);
    if (len < ihl + 1) return false; // type unreadable: treat as an error message
    if (!isIcmpQuery(buf[off + ihl]!)) return false;
  }
  return true;
}

/**
 * Write an IPv4 ICMP error about the packet at (orig, origOff, origLen) into
 * `out` at outOff; returns the reply length. The reply goes to the offending
 * packet's source, from `fromAddr`, and quotes its header plus 8 bytes of
 * payload. `mtu` fills the next-hop MTU field (type 3 code 4 only).
 */
export function writeIcmpError(
  out: Uint8Array,
  outOff: number,
  orig: Uint8Array,
  origOff: number,
  origLen: number,
  type: number,
  code: number,
  mtu: number,
  fromAddr: number,
): number {
  const quoted = Math.min(origLen, headerLength(orig, origOff) + 8);
  const icmpLen = 8 + quoted;
  const total = 20 + icmpLen;
  const o = outOff;
  out[o] = 0x45;
  out[o + 1] = 0xc0; // precedence "internetwork control", as kernels mark ICMP errors
  writeU16(out, o + 2, total);
  writeU16(out, o + 4, 0); // identification: never fragmented
  writeU16(out, o + 6, 0);
  out[o + 8] = 64;
  out[o + 9] = PROTO_ICMP;
  writeU16(out, o + 10, 0);
  writeU32(out, o + 12, fromAddr);
  writeU32(out, o + 16, srcAddr(orig, origOff));
  writeU16(out, o + 10, checksum(out, o, 20));

  const i = o + 20;
  out[i] = type;
  out[i + 1] = code;
  writeU16(out, i + 2, 0);
  writeU16(out, i + 4, 0);
  writeU16(out, i + 6, type === ICMP_DEST_UNREACHABLE && code === CODE_FRAG_NEEDED ? mtu : 0);
  // A byte loop: at most 68 bytes, and no subarray view to allocate.
  for (let k = 0; k < quoted; k++) out[i + 8 + k] = orig[origOff + k]!;
  writeU16(out, i + 2, checksum(out, i, icmpLen));
  return total;
}
