/**
 * Text in its one canonical form: the lease codec keeps a lease's
 * addresses only so, and the kernel-state applier writes no other token
 * into an `ip -batch` or `bridge -batch` line. iproute2 splits a batch line
 * at whitespace and exits on an argument it cannot parse (even with
 * -force), so a token with a space, a newline or a vertical tab would add
 * options, split the batch, or end it; lease text (PublicIP, VtepMAC) is
 * written by any host with store access.
 */
import { formatIP6, formatIP6Net, parseIP4, parseIP6, parseIP6Net } from './ipaddr.js';

/** Whether formatting the parsed text gives the text back. */
function formatsBack<T>(text: string, parse: (t: string) => T, format: (v: T) => string): boolean {
  try {
    return format(parse(text)) === text;
  } catch {
    return false;
  }
}

/** One decimal octet as Go and formatIP4 write it: 0-255, no leading zero. */
const OCTET = '(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])';
const IP4_RE = new RegExp(`^${OCTET}(?:\\.${OCTET}){3}$`);
const NET4_RE = new RegExp(`^(${OCTET}(?:\\.${OCTET}){3})/(3[0-2]|[12]?[0-9])$`);

/**
 * "192.0.2.7": what formatIP4 writes. A regular expression, not a parse and
 * a format: the applier checks every address of every lease each round
 * (15,000 of them with 5,000 vxlan peers), and this allocates nothing.
 */
export const isCanonicalIP4 = (text: string): boolean => IP4_RE.test(text);

/** RFC 5952, as Go writes it. */
export const isCanonicalIP6 = (text: string): boolean => formatsBack(text, parseIP6, formatIP6);

/** "10.5.3.0/24": a network address with its length, as formatIP4Net writes it. */
export function isCanonicalNet4(text: string): boolean {
  const m = NET4_RE.exec(text);
  if (!m) return false;
  // The network address itself: no host bits set below the length.
  const ip = parseIP4(m[1]!);
  const len = Number(m[2]);
  return len === 0 ? ip === 0 : (ip & (len === 32 ? 0 : 0xffffffff >>> len)) === 0;
}

/** "fd00:10:244:1::/64": an IPv6 network address with its length, RFC 5952. */
export const isCanonicalNet6 = (text: string): boolean => formatsBack(text, parseIP6Net, formatIP6Net);

/** A Linux interface name: 1-15 bytes, no whitespace or slash (the kernel's own rule, narrowed to what we create). */
export function isDevName(text: string): boolean {
  return /^[A-Za-z0-9_.-]{1,15}$/.test(text);
}

/** A MAC address as iproute2 prints it: six lowercase hex pairs. */
export function isCanonicalMac(text: string): boolean {
  return /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(text);
}
