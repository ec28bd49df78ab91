/**
 * Choosing the external interface as flannel does: by --iface (name or
 * address, in order), then --iface-regex, else the interface of the default
 * route. PublicIP defaults to that interface's first IPv4 address.
 */

import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { isIP4 } from './ipaddr.js';

export interface ExternalInterface {
  /** Interface name, e.g. "eth0". */
  name: string;
  index: number;
  mtu: number;
  /** The interface's own IPv4 address (source of encapsulated traffic); "" on an IPv6-only network whose interface has none. */
  ifaceAddr: string;
  /** Address published as PublicIP (--public-ip, else ifaceAddr); "" when ifaceAddr is. */
  extAddr: string;
  ifaceAddr6?: string;
  extAddr6?: string;
}

const run = promisify(execFile);

interface IpAddrInfo {
  family: string;
  local: string;
  prefixlen: number;
  scope?: string;
}
export interface LinkInfo {
  ifindex: number;
  ifname: string;
  mtu: number;
  addr_info: IpAddrInfo[];
}

async function ipJson<T>(args: string[]): Promise<T> {
  try {
    const { stdout } = await run('ip', ['-j', ...args], { timeout: 10_000 });
    return JSON.parse(stdout || '[]') as T;
  } catch (err) {
    throw new Error(`"ip -j ${args.join(' ')}" failed: ${(err as Error).message.split('\n')[0]} (is iproute2 installed?)`);
  }
}

export async function listLinks(): Promise<LinkInfo[]> {
  return ipJson<LinkInfo[]>(['addr', 'show']);
}

export interface InterfaceSelection {
  iface: string[];
  ifaceRegex: string[];
  ifaceCanReach: string;
  publicIP: string;
  publicIPv6: string;
}

function v4(link: LinkInfo): string | undefined {
  return link.addr_info.find((a) => a.family === 'inet')?.local;
}
function v6(link: LinkInfo): string | undefined {
  return link.addr_info.find((a) => a.family === 'inet6' && a.scope === 'global')?.local;
}

/** The address families the network carries (flannel's ipStack): what the interface must have an address of. */
export interface AddressFamilies {
  ipv4: boolean;
  ipv6: boolean;
}

/**
 * Pick the external interface like flannel: --iface, then --iface-regex,
 * then --iface-can-reach, else the default route's. It must have an
 * address of every family the network carries; an IPv6-only network picks
 * by the default IPv6 route and needs no IPv4 address.
 */
export async function selectExternalInterface(sel: InterfaceSelection, links?: LinkInfo[], families: AddressFamilies = { ipv4: true, ipv6: false }): Promise<ExternalInterface> {
  const all = links ?? (await listLinks());
  const v6only = !families.ipv4 && families.ipv6;
  const usable = (l: LinkInfo) => (v6only ? v6(l) : v4(l));
  const withAddr = (l: LinkInfo, addr: string | undefined): ExternalInterface => {
    const ifaceAddr = addr ?? v4(l) ?? '';
    if (!ifaceAddr && !v6only) throw new Error(`interface ${l.ifname} has no IPv4 address`);
    if (sel.publicIP && !isIP4(sel.publicIP)) throw new Error(`--public-ip "${sel.publicIP}" is not an IPv4 address`);
    const out: ExternalInterface = { name: l.ifname, index: l.ifindex, mtu: l.mtu, ifaceAddr, extAddr: sel.publicIP || ifaceAddr };
    const a6 = v6(l);
    if (a6) out.ifaceAddr6 = a6;
    if (sel.publicIPv6 || a6) out.extAddr6 = sel.publicIPv6 || a6;
    if (families.ipv6 && !out.extAddr6) throw new Error(`interface ${l.ifname} has no global IPv6 address, and EnableIPv6 needs one (or pass --public-ipv6)`);
    return out;
  };

  for (const want of sel.iface) {
    if (isIP4(want) || want.includes(':')) {
      const l = all.find((x) => x.addr_info.some((a) => a.local === want));
      if (l) return withAddr(l, isIP4(want) ? want : undefined);
    } else {
      const l = all.find((x) => x.ifname === want);
      if (l) return withAddr(l, undefined);
    }
  }
  if (sel.iface.length > 0 && sel.ifaceRegex.length === 0) {
    throw new Error(`none of --iface ${sel.iface.join(', ')} matches an interface on this host (have: ${all.map((l) => l.ifname).join(', ')})`);
  }
  for (const re of sel.ifaceRegex) {
    const rx = new RegExp(re);
    for (const l of all) {
      const addr = l.addr_info.find((a) => rx.test(a.local));
      if (addr && addr.family === 'inet') return withAddr(l, addr.local);
      if (addr && v6only) return withAddr(l, undefined);
      if (rx.test(l.ifname) && usable(l)) return withAddr(l, undefined);
    }
  }
  if (sel.ifaceRegex.length > 0) throw new Error(`no interface matches --iface-regex ${sel.ifaceRegex.join(', ')}`);

  if (sel.ifaceCanReach) {
    const routes = await ipJson<{ dev: string; prefsrc?: string }[]>(['route', 'get', sel.ifaceCanReach]);
    const l = routes[0] && all.find((x) => x.ifname === routes[0]!.dev);
    if (!l) throw new Error(`no interface can reach ${sel.ifaceCanReach}`);
    return withAddr(l, routes[0]!.prefsrc);
  }

  const defaults = await ipJson<{ dev?: string }[]>([v6only ? '-6' : '-4', 'route', 'show', 'default']);
  const dev = defaults.find((r) => r.dev)?.dev;
  const l = dev ? all.find((x) => x.ifname === dev) : undefined;
  if (!l) throw new Error('no default route to pick the external interface from: pass --iface (name or address) or --iface-regex');
  return withAddr(l, undefined);
}
