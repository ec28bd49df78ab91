/**
 * Which addresses are on our link: the IPv4 prefixes of the external
 * interface, read once with one `ip` call, so "is this peer directly
 * reachable?" (host-gw, vxlan DirectRouting) costs no process per lease.
 */
import { ip4NetContains, parseIP4, parseIP4Net, type IP4Net } from './ipaddr.js';
import type { IpRunner } from './iproute.js';

export async function linkPrefixes(ip: IpRunner, dev: string): Promise<IP4Net[]> {
  const out = JSON.parse((await ip.run(['-4', '-json', 'addr', 'show', 'dev', dev])) || '[]') as { addr_info?: { local: string; prefixlen: number }[] }[];
  return out.flatMap((l) => l.addr_info ?? []).map((a) => parseIP4Net(`${a.local}/${a.prefixlen}`));
}

export function onLink(prefixes: readonly IP4Net[], addr: string): boolean {
  const ip = parseIP4(addr);
  return prefixes.some((p) => p.prefixLen < 32 && ip4NetContains(p, ip));
}
