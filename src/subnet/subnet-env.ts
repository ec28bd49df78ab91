/**
 * /run/flannel/subnet.env, the file CNI's flannel plugin reads. Same
 * variables and formatting as flannel; written through a temp file and
 * rename(2) so readers never see half a file.
 */
import { mkdir, readFile, rename, writeFile, open } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { formatIP4Net, formatIP6Net, parseIP4Net, parseIP6Net, type IP4Net, type IP6Net } from '../net/ipaddr.js';
import type { NetworkConfig } from '../config/network.js';
import type { Lease } from './types.js';

export function renderSubnetEnv(cfg: NetworkConfig, lease: Lease, mtu: number, ipMasq: boolean): string {
  let out = '';
  if (cfg.enableIPv4 && cfg.network && lease.subnet) {
    // FLANNEL_SUBNET carries the first host address with the subnet's length.
    out += `FLANNEL_NETWORK=${formatIP4Net(cfg.network)}\n`;
    out += `FLANNEL_SUBNET=${formatIP4Net({ ip: (lease.subnet.ip + 1) >>> 0, prefixLen: lease.subnet.prefixLen })}\n`;
  }
  if (cfg.enableIPv6 && cfg.ipv6Network && lease.ipv6Subnet) {
    out += `FLANNEL_IPV6_NETWORK=${formatIP6Net(cfg.ipv6Network)}\n`;
    out += `FLANNEL_IPV6_SUBNET=${formatIP6Net({ ip: lease.ipv6Subnet.ip + 1n, prefixLen: lease.ipv6Subnet.prefixLen })}\n`;
  }
  out += `FLANNEL_MTU=${mtu}\n`;
  out += `FLANNEL_IPMASQ=${ipMasq}\n`;
  return out;
}

export async function writeSubnetEnv(path: string, content: string): Promise<void> {
  const dir = dirname(path);
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const tmp = join(dir, `.${basename(path)}.${process.pid}`);
  await writeFile(tmp, content, { mode: 0o644 });
  const fh = await open(tmp, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, path);
}

/** The subnet(s) we held before a restart, from a previous subnet.env (missing or garbled file: none). */
export async function readPreviousSubnets(path: string): Promise<{ subnet: IP4Net | null; ipv6Subnet: IP6Net | null }> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return { subnet: null, ipv6Subnet: null };
  }
  const vars = parseEnv(text);
  const parse = <T>(v: string | undefined, fn: (s: string) => T): T | null => {
    if (!v) return null;
    try {
      return fn(v);
    } catch {
      return null;
    }
  };
  // parseIP4Net masks the host bits, turning 10.5.81.1/24 back into the subnet.
  return { subnet: parse(vars.FLANNEL_SUBNET, parseIP4Net), ipv6Subnet: parse(vars.FLANNEL_IPV6_SUBNET, parseIP6Net) };
}

export function parseEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z0-9_]+)=(.*)$/.exec(line);
    if (m) out[m[1]!] = m[2]!.trim();
  }
  return out;
}
