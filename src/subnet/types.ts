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

export interface Lease {
  /** Present when IPv4 is enabled. */
  subnet: IP4Net | null;
  /** Present when IPv6 is enabled. */
  ipv6Subnet: IP6Net | null;
  attrs: LeaseAttrs;
  /** Expiry in ms since epoch (0 when unknown). */
  expiration: number;
  /** Store key relative to the prefix: "subnets/10.5.34.0-24". */
  key: string;
}

export type LeaseEvent =
  | { type: 'added'; lease: Lease }
  | { type: 'removed'; lease: Lease };

export interface LeaseWatchHandle {
  close(): Promise<void>;
}

export interface SubnetManager {
  readonly name: string;
  getNetworkConfig(): Promise<NetworkConfig>;
  /** The lease this host held before (the one carrying our PublicIP), if any: what a backend may keep stable. */
  findPreviousLease(publicIP: string): Promise<Lease | null>;
  /**
   * Acquire a lease: the previous one for this host (`previous` subnet from
   * subnet.env, or a lease carrying our PublicIP), else a random free subnet.
   */
  acquireLease(attrs: LeaseAttrs, previous?: { subnet?: IP4Net | null; ipv6Subnet?: IP6Net | null }): Promise<Lease>;
  /** Extend the lease TTL; returns the lease with its new expiration. */
  renewLease(lease: Lease): Promise<Lease>;
  /**
   * Deliver the current set of other leases as 'added' events, then every
   * change, without gaps, until closed. Survives store outages by re-listing
   * and diffing on reconnect. onOwnLeaseRemoved fires when our own key
   * disappears (expired or deleted by an operator) so the daemon can restore it.
   */
  watchLeases(ownLease: Lease, onEvents: (events: LeaseEvent[]) => void, onOwnLeaseRemoved?: () => void): Promise<LeaseWatchHandle>;
  close(): Promise<void>;
}
