/**
 * The tokens the kernel-state applier may write into an `ip -batch` or
 * `bridge -batch` line, each in its one canonical form. iproute2 splits a
 * batch line at whitespace and exits on an argument it cannot parse (even
 * with -force), so a token with a space, a newline or a vertical tab would
 * add options, split the batch, or end it: every later line of the round
 * would then never be applied. Lease text reaches these lines (PublicIP,
 * VtepMAC); whatever the codec let through, nothing that is not canonical
 * is ever written.
 */
import { formatIP4, formatIP4Net, formatIP6, parseIP4, parseIP4Net, parseIP6 } from './ipaddr.js';

export function isCanonicalIP4(text: string): boolean {
  try {
    return formatIP4(parseIP4(text)) === text;
  } catch {
    return false;
  }
}

export function isCanonicalIP6(text: string): boolean {
  try {
    return formatIP6(parseIP6(text)) === text;
  } catch {
    return false;
  }
}

/** "10.5.3.0/24": a network address with its length, as formatIP4Net writes it. */
export function isCanonicalNet4(text: string): boolean {
  try {
    return formatIP4Net(parseIP4Net(text)) === text;
  } catch {
    return false;
  }
}

/** A Linux interface name: 1-15 bytes, no whitespace or slash (the kernel's own rule, narrowed to what we create). */
export function isDevName(text: string): boolean {
  return /^[A-Za-z0-9_.-]{1,15}$/.test(text);
}

/** A MAC address as iproute2 prints it: six lowercase hex pairs. */
export function isCanonicalMac(text: string): boolean {
  return /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(text);
}
