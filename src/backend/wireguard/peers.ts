/**
 * Which WireGuard peer a lease calls for, as flannel's wireguard backend
 * configures them: a lease of BackendType "wireguard" whose BackendData
 * carries a PublicKey becomes a peer with endpoint PublicIP:ListenPort (our
 * own ListenPort: flannel assumes every host listens on the same one) and
 * allowed IPs = its subnet. One peer per PublicIP: when a host's key changes,
 * the newer lease replaces the older peer (flannel's cleanupEndpointPeers).
 */
import type { Lease } from '../../subnet/types.js';
import { formatIP4Net, parseIP4 } from '../../net/ipaddr.js';
import { parseKey } from './options.js';

export interface WgPeerSpec {
  leaseKey: string;
  publicKey: Buffer;
  /** The key as wg prints it (base64). */
  publicKeyText: string;
  endpointIP: string;
  endpointAddr: number;
  port: number;
  subnet: string;
}

export type PeerVerdict = { peer: WgPeerSpec } | { skip: string };

export function peerOf(lease: Lease, listenPort: number): PeerVerdict {
  if (!lease.subnet) return { skip: 'no IPv4 subnet' };
  if (lease.attrs.backendType !== 'wireguard') return { skip: `BackendType ${lease.attrs.backendType ?? '(none)'}` };
  const data = lease.attrs.backendData as { PublicKey?: unknown } | undefined;
  const text = typeof data?.PublicKey === 'string' ? data.PublicKey : '';
  const key = parseKey(text);
  if (!key) return { skip: 'BackendData has no valid PublicKey' };
  let addr: number;
  try {
    addr = parseIP4(lease.attrs.publicIP);
  } catch {
    return { skip: 'no usable PublicIP' };
  }
  return { peer: { leaseKey: lease.key, publicKey: key, publicKeyText: key.toString('base64'), endpointIP: lease.attrs.publicIP, endpointAddr: addr, port: listenPort, subnet: formatIP4Net(lease.subnet) } };
}

/** The peer set from the peers of the current leases: the latest lease per PublicIP wins. */
export function peerSet(byLease: ReadonlyMap<string, WgPeerSpec>): WgPeerSpec[] {
  const byEndpoint = new Map<string, WgPeerSpec>();
  for (const p of byLease.values()) byEndpoint.set(p.endpointIP, p);
  return [...byEndpoint.values()];
}
