/**
 * Which addresses are on our link: the IPv4 prefixes of the external
 * interface, read once with one `ip` call, so "is this peer directly
 * reachable?" (host-gw, vxlan DirectRouting) costs no process per lease.
 */
import { ip4NetContains, ip6NetContains, parseIP4, parseIP4Net, parseIP6, parseIP6Net, type IP4Net, type IP6Net } from './ipaddr.js';
import type { IpRunner } from './iproute.js';

export async function linkPrefixes(ip: IpRunner, dev: string): Promise<IP4Net[]> {
  const out = JSON.parse((await ip.run(['-4', '-json', 'addr', 'show', 'dev', dev])) || '[]') as { addr_info?: { local: string; prefixlen: number }[] }[];
  return out.flatMap((l) => l.addr_info ?? []).filter(hasAddress).map((a) => parseIP4Net(`${a.local}/${a.prefixlen}`));
}

/** iproute2's JSON lists an address of the other family as {} under -4/-6: those are skipped. */
function hasAddress(a: { local?: string; prefixlen?: number }): a is { local: string; prefixlen: number } {
  return typeof a.local === 'string' && typeof a.prefixlen === 'number';
}

export function onLink(prefixes: readonly IP4Net[], addr: string): boolean {
  const ip = parseIP4(addr);
  return prefixes.some((p) => p.prefixLen < 32 && ip4NetContains(p, ip));
}

/** The IPv6 prefixes of the interface (global scope: a link-local /64 says nothing about a peer's PublicIPv6). */
export async function linkPrefixes6(ip: IpRunner, dev: string): Promise<IP6Net[]> {
  const out = JSON.parse((await ip.run(['-6', '-json', 'addr', 'show', 'dev', dev, 'scope', 'global'])) || '[]') as { addr_info?: { local: string; prefixlen: number }[] }[];
  return out.flatMap((l) => l.addr_info ?? []).filter(hasAddress).map((a) => parseIP6Net(`${a.local}/${a.prefixlen}`));
}

export function onLink6(prefixes: readonly IP6Net[], addr: string): boolean {
  const ip = parseIP6(addr);
  return prefixes.some((p) => p.prefixLen < 128 && ip6NetContains(p, ip));
}
