/**
 * Which WireGuard devices the Mode asks for and which peer each lease is on
 * them, as flannel's wireguard backend configures them.
 *
 * Mode "separate" (the default): flannel-wg carries IPv4 (ListenPort,
 * endpoint PublicIP, the peer's key from BackendData) and, with EnableIPv6,
 * flannel-wg-v6 carries IPv6 (ListenPortV6, endpoint [PublicIPv6], the key
 * from BackendV6Data). Modes "ipv4", "ipv6" and "auto": one device,
 * flannel-wg on ListenPort, carrying every enabled family, its endpoints
 * IPv4, IPv6, or chosen per peer (flannel's selectPublicEndpoint).
 *
 * A lease of BackendType "wireguard" becomes a peer with our own listen port
 * (flannel assumes every host listens on the same one) and allowed IPs =
 * the subnets the device carries. Peers are keys, as in WireGuard: leases
 * with one public key are one peer whose allowed IPs are all their subnets,
 * and leases with one PublicIP but two keys are two peers (flannel instead
 * keeps one peer per endpoint, cleanupEndpointPeers, which let a lease
 * claiming another host's PublicIP take that host's place).
 */
import type { Lease } from '../../subnet/types.js';
import { formatIP4Net, formatIP6Net, parseIP4, parseIP6 } from '../../net/ipaddr.js';
import { DEVICE_NAME, DEVICE_NAME_V6, parseKey, type WireGuardMode } from './options.js';

export type EndpointFamily = 'ipv4' | 'ipv6' | 'auto';

export interface WgDeviceSpec {
  name: string;
  listenPort: number;
  /** The pod address families the device carries: its addresses, routes and peers' allowed IPs. */
  carriesIPv4: boolean;
  carriesIPv6: boolean;
  endpoints: EndpointFamily;
}

export interface WgPeerSpec {
  leaseKey: string;
  publicKey: Buffer;
  /** The key as wg prints it (base64). */
  publicKeyText: string;
  /** The endpoint's address as text (no brackets). */
  endpointIP: string;
  endpointFamily: 4 | 6;
  port: number;
  /** The peer's subnets on this device, as CIDR text (IPv4 first). */
  allowedIPs: string[];
}

export type PeerVerdict = { peer: WgPeerSpec } | { skip: string };

/** The devices flannel creates for a Mode and the enabled address families. */
export function wgDevices(mode: WireGuardMode, enableIPv4: boolean, enableIPv6: boolean, listenPort: number, listenPortV6: number): WgDeviceSpec[] {
  if (mode === 'separate') {
    const out: WgDeviceSpec[] = [];
    if (enableIPv4) out.push({ name: DEVICE_NAME, listenPort, carriesIPv4: true, carriesIPv6: false, endpoints: 'ipv4' });
    if (enableIPv6) out.push({ name: DEVICE_NAME_V6, listenPort: listenPortV6, carriesIPv4: false, carriesIPv6: true, endpoints: 'ipv6' });
    return out;
  }
  return [{ name: DEVICE_NAME, listenPort, carriesIPv4: enableIPv4, carriesIPv6: enableIPv6, endpoints: mode }];
}

/** Where this host itself can be reached from (auto mode prefers a family both ends have publicly). */
export interface LocalEndpoints {
  extAddr?: string;
  extAddr6?: string;
}

/** flannel's ip.IP4.IsPrivate: RFC 1918 space. */
function isPrivate4(a: number): boolean {
  return a >>> 24 === 10 || (a & 0xfff00000) >>> 0 === 0xac100000 || (a & 0xffff0000) >>> 0 === 0xc0a80000;
}

/** flannel's ip.IP6.IsPrivate: unique local addresses, fc00::/7. */
function isPrivate6(a: bigint): boolean {
  return a >> 121n === 0x7en;
}

/** A published address as `parse` reads it, or null when absent or not one (a lease's address may be anything). */
function addressOrNull<T>(parse: (text: string) => T, text: string | null | undefined): T | null {
  if (!text) return null;
  try {
    return parse(text);
  } catch {
    return null;
  }
}
const parse4 = (text: string | null | undefined) => addressOrNull(parseIP4, text);
const parse6 = (text: string | null | undefined) => addressOrNull(parseIP6, text);

/**
 * flannel's selectPublicEndpoint: the one family the peer has; with both,
 * IPv4 when the peer's is public and we have one, else IPv6 when both
 * ends' are public, else IPv4.
 */
function autoFamily(v4: number | null, v6: bigint | null, local: LocalEndpoints): 4 | 6 | null {
  if (v4 === null) return v6 === null ? null : 6;
  if (v6 === null) return 4;
  if (!isPrivate4(v4) && local.extAddr) return 4;
  const own6 = parse6(local.extAddr6);
  if (!isPrivate6(v6) && own6 !== null && !isPrivate6(own6)) return 6;
  return 4;
}

export function peerOf(lease: Lease, dev: WgDeviceSpec, local: LocalEndpoints = {}): PeerVerdict {
  if (lease.attrs.backendType !== 'wireguard') return { skip: `BackendType ${lease.attrs.backendType ?? '(none)'}` };
  const allowedIPs: string[] = [];
  if (dev.carriesIPv4 && lease.subnet) allowedIPs.push(formatIP4Net(lease.subnet));
  if (dev.carriesIPv6 && lease.ipv6Subnet) allowedIPs.push(formatIP6Net(lease.ipv6Subnet));
  if (allowedIPs.length === 0) return { skip: `no ${dev.carriesIPv4 ? (dev.carriesIPv6 ? 'IPv4 or IPv6' : 'IPv4') : 'IPv6'} subnet` };
  // flannel reads the key of a lease with an IPv6 subnet from BackendV6Data whenever the device carries IPv6.
  const fromV6 = dev.carriesIPv6 && lease.ipv6Subnet !== null;
  const data = (fromV6 ? lease.attrs.backendV6Data : lease.attrs.backendData) as { PublicKey?: unknown } | undefined;
  const key = parseKey(typeof data?.PublicKey === 'string' ? data.PublicKey : '');
  if (!key) return { skip: `${fromV6 ? 'BackendV6Data' : 'BackendData'} has no valid PublicKey` };
  const v4 = parse4(lease.attrs.publicIP);
  const v6 = parse6(lease.attrs.publicIPv6);
  const family = dev.endpoints === 'ipv4' ? 4 : dev.endpoints === 'ipv6' ? 6 : autoFamily(v4, v6, local);
  if (family === 4 && v4 === null) return { skip: 'no usable PublicIP' };
  if (family === 6 && v6 === null) return { skip: 'no usable PublicIPv6' };
  if (family === null) return { skip: 'no usable PublicIP or PublicIPv6' };
  return {
    peer: {
      leaseKey: lease.key,
      publicKey: key,
      publicKeyText: key.toString('base64'),
      endpointIP: family === 4 ? lease.attrs.publicIP : lease.attrs.publicIPv6!,
      endpointFamily: family,
      port: dev.listenPort,
      allowedIPs,
    },
  };
}

/** host:port as wg writes an endpoint ([addr]:port for IPv6). */
export function endpointText(p: WgPeerSpec): string {
  return p.endpointFamily === 6 ? `[${p.endpointIP}]:${p.port}` : `${p.endpointIP}:${p.port}`;
}

export function samePeer(a: WgPeerSpec, b: WgPeerSpec): boolean {
  return a.publicKey.equals(b.publicKey) && a.endpointIP === b.endpointIP && a.port === b.port && a.allowedIPs.join() === b.allowedIPs.join();
}

/**
 * The peer set from the peers of the current leases: one per public key,
 * its allowed IPs the union of its leases' subnets. When leases with one
 * key name different endpoints, the first-seen lease's endpoint is kept
 * (a lease copying another host's key cannot redirect it; the real host's
 * packets roam it back anyway); `conflicts` lists such keys.
 */
export function peerSet(byLease: ReadonlyMap<string, WgPeerSpec>, conflicts: string[] = []): WgPeerSpec[] {
  const byKey = new Map<string, WgPeerSpec>();
  for (const p of byLease.values()) {
    const have = byKey.get(p.publicKeyText);
    if (!have) {
      byKey.set(p.publicKeyText, p);
      continue;
    }
    if (have.endpointIP !== p.endpointIP || have.port !== p.port) conflicts.push(p.publicKeyText);
    byKey.set(p.publicKeyText, { ...have, allowedIPs: [...have.allowedIPs, ...p.allowedIPs.filter((a) => !have.allowedIPs.includes(a))] });
  }
  return [...byKey.values()];
}
