import type { IP4Net, IP6Net } from '../net/ipaddr.js';
import type { NetworkConfig } from '../config/network.js';

/** What a host publishes about itself in its lease (flannel's LeaseAttrs). */
export interface LeaseAttrs {
  /** Dotted IPv4 address other hosts send encapsulated traffic to. */
  publicIP: string;
  /** IPv6 public address, or null (flannel writes "PublicIPv6":null). */
  publicIPv6: string | null;
  backendType?: string;
  /** Backend specific JSON, kept verbatim (e.g. {"VNI":1,"VtepMAC":"..."}). */
  backendData?: unknown;
  backendV6Data?: unknown;
}

/** PublicIP of a lease that has none: an IPv6-only host's (flannel writes "PublicIP":"0.0.0.0" then). */
export const NO_PUBLIC_IP = '0.0.0.0';

/**
 * The address that names the host holding a lease (flannel's ownership
 * rule: one PublicIP, one host). An IPv6-only host publishes PublicIP
 * 0.0.0.0, as flannel's does, so its PublicIPv6 names it instead: otherwise
 * every IPv6-only host would find every other's lease "ours".
 */
export function leaseHolder(attrs: Pick<LeaseAttrs, 'publicIP' | 'publicIPv6'>): string {
  return attrs.publicIP && attrs.publicIP !== NO_PUBLIC_IP ? attrs.publicIP : (attrs.publicIPv6 ?? '');
}

export interface Lease {
  /** Present when IPv4 is enabled. */
  subnet: IP4Net | null;
  /** Present when IPv6 is enabled. */
  ipv6Subnet: IP6Net | null;
  attrs: LeaseAttrs;
  /**
   * Expiry in ms since epoch; 0 when the lease never expires (an operator's
   * reservation); Infinity when it expires but the store did not say when
   * (other hosts' leases listed from etcd).
   */
  expiration: number;
  /** Store key relative to the prefix: "subnets/10.5.34.0-24". */
  key: string;
  /** Store revision of the write that produced this value (our own lease: the compare for renewals). */
  modRevision?: number;
  /** Store revision at which the key was created (decides collisions: first created wins). */
  createRevision?: number;
}

export type LeaseEvent =
  | { type: 'added'; lease: Lease }
  | { type: 'removed'; lease: Lease };

export interface LeaseWatchHandle {
  close(): Promise<void>;
  /** Leases followed now, and refusals so far by reason (for /metrics). */
  stats(): { accepted: number; rejected: Record<string, number> };
}

export interface LeaseWatchCallbacks {
  onEvents(events: LeaseEvent[]): void;
  /** Our key disappeared (expired, deleted by an operator): the daemon restores it. */
  onOwnLeaseRemoved?(): void;
  /** Our key now holds another host's lease: this host must stop using the subnet. */
  onOwnLeaseTaken?(holder: string): void;
}

/** Our subnet is held by someone else now; using it would put two hosts' pods on one subnet. */
export class LeaseLostError extends Error {
  constructor(subnet: string, why: string) {
    super(`lost our lease ${subnet}: ${why}`);
    this.name = 'LeaseLostError';
  }
}

export interface SubnetManager {
  readonly name: string;
  /**
   * Connect and wait until the store can be used (Kubernetes: the node
   * list synced and our permissions granted). Absent: nothing to wait for.
   */
  start?(): Promise<void>;
  /**
   * Addresses an operator pinned for this host in the store (Kubernetes:
   * the node-public-ip(v6) annotations), used as --public-ip(v6) when those
   * flags are not given.
   */
  storedPublicIPs?(): Promise<{ publicIP?: string; publicIPv6?: string }>;
  /** The daemon is up (subnet.env written, backend running); Kubernetes marks the node's network available. */
  announceUp?(): void;
  getNetworkConfig(): Promise<NetworkConfig>;
  /**
   * The lease this host held before (the one carrying our PublicIP, looked
   * for first at the subnet subnet.env recorded), if any: what a backend may keep stable.
   */
  /** Our lease from before a restart: the one `holder` (see leaseHolder) holds. */
  findPreviousLease(holder: string, previous?: { subnet?: IP4Net | null; ipv6Subnet?: IP6Net | null }): Promise<Lease | null>;
  /**
   * Acquire a lease: the previous one for this host (`previous` subnet from
   * subnet.env, or a lease carrying our PublicIP), else a random free subnet.
   */
  acquireLease(attrs: LeaseAttrs, previous?: { subnet?: IP4Net | null; ipv6Subnet?: IP6Net | null }): Promise<Lease>;
  /**
   * Extend the lease TTL, only if the key still holds what we last wrote
   * (compare on modRevision); returns the lease with its new expiration and
   * revision. Throws LeaseLostError when someone else wrote it meanwhile.
   */
  renewLease(lease: Lease): Promise<Lease>;
  /**
   * Write our lease back after it vanished, only if the key is still absent
   * (create-if-absent). Throws LeaseLostError when another host holds it now.
   */
  restoreLease(lease: Lease): Promise<Lease>;
  /**
   * Deliver the current set of other leases as 'added' events, then every
   * change, without gaps, until closed; leases that do not fit `config` or
   * collide are skipped (see lease-set.ts). Survives store outages by
   * re-listing and diffing on reconnect.
   */
  watchLeases(ownLease: Lease, config: NetworkConfig, callbacks: LeaseWatchCallbacks): Promise<LeaseWatchHandle>;
  close(): Promise<void>;
}
