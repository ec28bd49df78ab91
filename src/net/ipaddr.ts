/**
 * IPv4 / IPv6 address and prefix arithmetic.
 *
 * IPv4 addresses are unsigned 32-bit numbers (fast, and what the packet path
 * uses); IPv6 addresses are 128-bit bigints. Keys and files use flannel's
 * textual forms ("10.5.34.0/24", key form "10.5.34.0-24").
 */

export interface IP4Net {
  readonly ip: number;
  readonly prefixLen: number;
}

export interface IP6Net {
  readonly ip: bigint;
  readonly prefixLen: number;
}

const IPV4_RE = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

export function parseIP4(text: string): number {
  const m = IPV4_RE.exec(text.trim());
  if (!m) throw new Error(`invalid IPv4 address "${text}"`);
  let v = 0;
  for (let i = 1; i <= 4; i++) {
    const octet = Number(m[i]);
    if (octet > 255 || (m[i]!.length > 1 && m[i]!.startsWith('0'))) throw new Error(`invalid IPv4 address "${text}"`);
    v = v * 256 + octet;
  }
  return v >>> 0;
}

export function isIP4(text: string): boolean {
  try {
    parseIP4(text);
    return true;
  } catch {
    return false;
  }
}

export function formatIP4(ip: number): string {
  return `${ip >>> 24}.${(ip >>> 16) & 255}.${(ip >>> 8) & 255}.${ip & 255}`;
}

export function mask4(prefixLen: number): number {
  return prefixLen === 0 ? 0 : (0xffffffff << (32 - prefixLen)) >>> 0;
}

export function parseIP4Net(text: string): IP4Net {
  const parts = text.trim().split('/');
  if (parts.length !== 2 || !/^\d{1,2}$/.test(parts[1]!)) throw new Error(`invalid IPv4 network "${text}": expected A.B.C.D/LEN`);
  const prefixLen = Number(parts[1]);
  if (prefixLen > 32) throw new Error(`invalid IPv4 network "${text}": prefix length ${prefixLen} > 32`);
  const ip = parseIP4(parts[0]!);
  // flannel (Go's net.ParseCIDR) masks host bits away; do the same.
  return { ip: (ip & mask4(prefixLen)) >>> 0, prefixLen };
}

export function formatIP4Net(n: IP4Net, sep = '/'): string {
  return `${formatIP4(n.ip)}${sep}${n.prefixLen}`;
}

export function ip4NetSize(n: IP4Net): number {
  return 2 ** (32 - n.prefixLen);
}

export function ip4NetContains(n: IP4Net, ip: number): boolean {
  return ((ip & mask4(n.prefixLen)) >>> 0) === n.ip;
}

export function ip4NetContainsNet(outer: IP4Net, inner: IP4Net): boolean {
  return inner.prefixLen >= outer.prefixLen && ip4NetContains(outer, inner.ip);
}

export function ip4NetOverlaps(a: IP4Net, b: IP4Net): boolean {
  return ip4NetContains(a, b.ip) || ip4NetContains(b, a.ip);
}

export function ip4NetEqual(a: IP4Net | null | undefined, b: IP4Net | null | undefined): boolean {
  if (!a || !b) return !a && !b;
  return a.ip === b.ip && a.prefixLen === b.prefixLen;
}

// ---------------------------------------------------------------- IPv6

export function parseIP6(text: string): bigint {
  let s = text.trim();
  if (s.includes('%')) throw new Error(`invalid IPv6 address "${text}": zones are not allowed`);
  // An embedded IPv4 tail (::ffff:1.2.3.4) becomes two hextets.
  const lastColon = s.lastIndexOf(':');
  if (lastColon >= 0 && s.slice(lastColon + 1).includes('.')) {
    const v4 = parseIP4(s.slice(lastColon + 1));
    s = `${s.slice(0, lastColon + 1)}${(v4 >>> 16).toString(16)}:${(v4 & 0xffff).toString(16)}`;
  }
  const halves = s.split('::');
  if (halves.length > 2) throw new Error(`invalid IPv6 address "${text}"`);
  const head = halves[0] ? halves[0].split(':') : [];
  const tail = halves.length === 2 && halves[1] ? halves[1].split(':') : [];
  const missing = 8 - head.length - tail.length;
  if ((halves.length === 1 && missing !== 0) || (halves.length === 2 && missing < 1)) {
    throw new Error(`invalid IPv6 address "${text}"`);
  }
  const groups = [...head, ...Array<string>(halves.length === 2 ? missing : 0).fill('0'), ...tail];
  let v = 0n;
  for (const g of groups) {
    if (!/^[0-9a-fA-F]{1,4}$/.test(g)) throw new Error(`invalid IPv6 address "${text}"`);
    v = (v << 16n) | BigInt(parseInt(g, 16));
  }
  return v;
}

/** RFC 5952 canonical text (lower case, longest zero run compressed). */
export function formatIP6(ip: bigint): string {
  const groups: number[] = [];
  for (let i = 7; i >= 0; i--) groups.push(Number((ip >> BigInt(i * 16)) & 0xffffn));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  return `${hex.slice(0, bestStart).join(':')}::${hex.slice(bestStart + bestLen).join(':')}`;
}

export function mask6(prefixLen: number): bigint {
  const all = (1n << 128n) - 1n;
  return prefixLen === 0 ? 0n : (all << BigInt(128 - prefixLen)) & all;
}

export function parseIP6Net(text: string): IP6Net {
  const parts = text.trim().split('/');
  if (parts.length !== 2 || !/^\d{1,3}$/.test(parts[1]!)) throw new Error(`invalid IPv6 network "${text}": expected ADDR/LEN`);
  const prefixLen = Number(parts[1]);
  if (prefixLen > 128) throw new Error(`invalid IPv6 network "${text}": prefix length ${prefixLen} > 128`);
  return { ip: parseIP6(parts[0]!) & mask6(prefixLen), prefixLen };
}

export function formatIP6Net(n: IP6Net, sep = '/'): string {
  return `${formatIP6(n.ip)}${sep}${n.prefixLen}`;
}

export function ip6NetContains(n: IP6Net, ip: bigint): boolean {
  return (ip & mask6(n.prefixLen)) === n.ip;
}

export function ip6NetOverlaps(a: IP6Net, b: IP6Net): boolean {
  return ip6NetContains(a, b.ip) || ip6NetContains(b, a.ip);
}

export function ip6NetEqual(a: IP6Net | null | undefined, b: IP6Net | null | undefined): boolean {
  if (!a || !b) return !a && !b;
  return a.ip === b.ip && a.prefixLen === b.prefixLen;
}

// ---------------------------------------------------------------- lease keys

/** flannel's key for a lease: "10.5.34.0-24" or "10.5.34.0-24&fc00::-64". */
export function makeSubnetKey(sn: IP4Net | null, sn6: IP6Net | null): string {
  const v4 = formatIP4Net(sn ?? { ip: 0, prefixLen: 0 }, '-');
  if (!sn6) return v4;
  return `${v4}&${formatIP6Net(sn6, '-')}`;
}

/** A whole path element: "x10.5.2.0-24" or "10.5.2.0-24junk" are not lease keys. */
const SUBNET_KEY_RE = /(?:^|\/)(\d+\.\d+\.\d+\.\d+)-(\d+)(?:&([a-fA-F\d:]+)-(\d+))?$/;

/**
 * Parse the last path element of a lease key; null when it is not a lease
 * key in canonical form (the network address with no host bits, no leading
 * zeros), so no two keys can name one subnet and repoint or delete each
 * other's routes.
 */
export function parseSubnetKey(key: string): { subnet: IP4Net; ipv6Subnet: IP6Net | null } | null {
  const m = SUBNET_KEY_RE.exec(key);
  if (!m) return null;
  try {
    const prefixLen = Number(m[2]);
    // parseIP4 refuses leading zeros in octets; refuse them in the length and any host bits.
    if (prefixLen > 32 || String(prefixLen) !== m[2]) return null;
    const ip = parseIP4(m[1]!);
    if ((ip & mask4(prefixLen)) >>> 0 !== ip) return null;
    const subnet: IP4Net = { ip, prefixLen };
    let ipv6Subnet: IP6Net | null = null;
    if (m[3]) {
      ipv6Subnet = parseIP6Net(`${m[3]}/${m[4]}`);
      if (parseIP6(m[3]) !== ipv6Subnet.ip || String(ipv6Subnet.prefixLen) !== m[4]) return null;
    }
    return { subnet, ipv6Subnet };
  } catch {
    return null;
  }
}
