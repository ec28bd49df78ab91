/**
 * The other hosts' leases a daemon accepts, checked against the network
 * config before any backend sees them. A lease is routable only when it is
 * inside Network with exactly SubnetLen (IPv6 likewise), does not overlap
 * our own subnet, and does not collide with another accepted lease; of two
 * that collide, the one created first (lower createRevision) wins, as the
 * store's create-if-absent would have decided had both used one key. A lease
 * the checks refuse is skipped with one log line and counted, so a host
 * cannot claim the whole Network, our pods' addresses, or a neighbour's
 * subnet by writing a lease for it.
 *
 * Every accepted lease has the same prefix length on an aligned boundary, so
 * two of them overlap only when their subnets are equal: collisions are
 * found in one map lookup, and a change costs O(1), not O(leases). With one
 * address family there is exactly one key per subnet (keys are canonical),
 * so collisions can only arise between dual-stack keys sharing one half.
 */
import type { Logger } from '../log.js';
import type { NetworkConfig } from '../config/network.js';
import { formatIP4Net, formatIP6Net, ip4NetContains, ip4NetEqual, ip6NetContains, ip6NetEqual, type IP4Net, type IP6Net } from '../net/ipaddr.js';
import type { Lease, LeaseEvent } from './types.js';
import { MALFORMED_REASONS, type LeaseDecodeError, type MalformedReason } from './lease-codec.js';

export type RejectReason = 'outside_network' | 'wrong_length' | 'wrong_family' | 'missing_subnet' | 'overlaps_own' | 'overlaps_other' | MalformedReason;

function describeNets(l: Lease): string {
  return [l.subnet && formatIP4Net(l.subnet), l.ipv6Subnet && formatIP6Net(l.ipv6Subnet)].filter(Boolean).join(',');
}

/** Whether two leases say the same in every field of both families (a renewal that changed nothing is no event). */
export function sameLease(a: Lease, b: Lease): boolean {
  return (
    ip4NetEqual(a.subnet, b.subnet) &&
    ip6NetEqual(a.ipv6Subnet, b.ipv6Subnet) &&
    a.attrs.publicIP === b.attrs.publicIP &&
    a.attrs.publicIPv6 === b.attrs.publicIPv6 &&
    a.attrs.backendType === b.attrs.backendType &&
    JSON.stringify(a.attrs.backendData) === JSON.stringify(b.attrs.backendData) &&
    JSON.stringify(a.attrs.backendV6Data) === JSON.stringify(b.attrs.backendV6Data)
  );
}

export class LeaseSet {
  /** Accepted leases by key ("subnets/10.5.34.0-24"). */
  readonly accepted = new Map<string, Lease>();
  private readonly byV4 = new Map<number, string>();
  private readonly byV6 = new Map<bigint, string>();
  /** Leases that lost a collision, re-examined when the winner goes away. */
  private readonly losers = new Map<string, Lease>();
  /** Key -> the reason it was last refused for (so each refusal is logged once). */
  private readonly refused = new Map<string, string>();
  /** Refusals counted by reason, for /metrics. */
  readonly rejectedTotal: Record<RejectReason, number> = {
    outside_network: 0,
    wrong_length: 0,
    wrong_family: 0,
    missing_subnet: 0,
    overlaps_own: 0,
    overlaps_other: 0,
    ...(Object.fromEntries(MALFORMED_REASONS.map((r) => [r, 0])) as Record<MalformedReason, number>),
  };

  constructor(
    private readonly config: NetworkConfig,
    private readonly own: { subnet: IP4Net | null; ipv6Subnet: IP6Net | null },
    private readonly log: Logger,
    /** Refusals already logged by an earlier set (a resync rebuilds the set without logging them again). */
    previous?: LeaseSet,
  ) {
    if (previous) {
      for (const [k, v] of previous.refused) this.refused.set(k, v);
      Object.assign(this.rejectedTotal, previous.rejectedTotal);
    }
  }

  /** Why `l` can never be routed, whatever the other leases; null when it may be. */
  private shapeProblem(l: Lease): { reason: RejectReason; detail: string } | null {
    const c = this.config;
    // A family the network does not use: flannel writes no such key, so it can only be a second
    // key for someone's subnet (and would squat it once the owner's lease is gone and re-created).
    if (!c.enableIPv6 && l.ipv6Subnet) return { reason: 'wrong_family', detail: 'has an IPv6 subnet while EnableIPv6 is off' };
    if (!c.enableIPv4 && l.subnet) return { reason: 'wrong_family', detail: 'has an IPv4 subnet while EnableIPv4 is off' };
    if (c.enableIPv4) {
      if (!l.subnet || !c.network) return { reason: 'missing_subnet', detail: 'no IPv4 subnet while EnableIPv4 is set' };
      if (l.subnet.prefixLen !== c.subnetLen) return { reason: 'wrong_length', detail: `/${l.subnet.prefixLen} instead of SubnetLen /${c.subnetLen}` };
      if (!ip4NetContains(c.network, l.subnet.ip)) return { reason: 'outside_network', detail: `outside Network ${formatIP4Net(c.network)}` };
      if (this.own.subnet && this.own.subnet.ip === l.subnet.ip) return { reason: 'overlaps_own', detail: 'is our own subnet' };
    }
    if (c.enableIPv6 && l.ipv6Subnet) {
      if (!c.ipv6Network) return { reason: 'outside_network', detail: 'IPv6 subnet without an IPv6Network' };
      if (l.ipv6Subnet.prefixLen !== c.ipv6SubnetLen) return { reason: 'wrong_length', detail: `/${l.ipv6Subnet.prefixLen} instead of IPv6SubnetLen /${c.ipv6SubnetLen}` };
      if (!ip6NetContains(c.ipv6Network, l.ipv6Subnet.ip)) return { reason: 'outside_network', detail: `outside IPv6Network ${formatIP6Net(c.ipv6Network)}` };
      if (this.own.ipv6Subnet && this.own.ipv6Subnet.ip === l.ipv6Subnet.ip) return { reason: 'overlaps_own', detail: 'is our own IPv6 subnet' };
    }
    return null;
  }

  private refuse(l: Lease, reason: RejectReason, detail: string): void {
    const tag = `${reason}:${detail}`;
    if (this.refused.get(l.key) === tag) return;
    this.refused.set(l.key, tag);
    this.rejectedTotal[reason] += 1;
    this.log.warn('skipping lease', { lease: l.key, subnet: describeNets(l), publicIP: l.attrs.publicIP, reason, detail });
  }

  /**
   * A key whose value does not decode (lease-codec.ts; the manager logs it):
   * counted by reason once per key and problem. The key's earlier lease, if
   * any, can no longer be trusted and is removed (an event in `out`).
   */
  rejectMalformed(key: string, err: LeaseDecodeError, out: LeaseEvent[], same: (a: Lease, b: Lease) => boolean): void {
    const tag = `${err.reason}:${err.message}`;
    const seen = this.refused.get(key) === tag;
    this.delete(key, out, same);
    this.refused.set(key, tag);
    if (!seen) this.rejectedTotal[err.reason] += 1;
  }

  /** Keys of accepted leases colliding with `l` (other than its own key). */
  private collisions(l: Lease): string[] {
    const out: string[] = [];
    const a = l.subnet ? this.byV4.get(l.subnet.ip) : undefined;
    if (a !== undefined && a !== l.key) out.push(a);
    const b = l.ipv6Subnet ? this.byV6.get(l.ipv6Subnet.ip) : undefined;
    if (b !== undefined && b !== l.key && b !== a) out.push(b);
    return out;
  }

  private index(l: Lease): void {
    if (l.subnet) this.byV4.set(l.subnet.ip, l.key);
    if (l.ipv6Subnet) this.byV6.set(l.ipv6Subnet.ip, l.key);
  }

  private unindex(l: Lease): void {
    if (l.subnet && this.byV4.get(l.subnet.ip) === l.key) this.byV4.delete(l.subnet.ip);
    if (l.ipv6Subnet && this.byV6.get(l.ipv6Subnet.ip) === l.key) this.byV6.delete(l.ipv6Subnet.ip);
  }

  /** Drop an accepted lease (no event); true when it was accepted. */
  private drop(key: string): Lease | undefined {
    const prev = this.accepted.get(key);
    if (!prev) return undefined;
    this.accepted.delete(key);
    this.unindex(prev);
    return prev;
  }

  /**
   * A lease was written (created, renewed or changed). Appends to `out` the
   * events the caller's view needs: added for a newly accepted or changed
   * lease, removed for one that is no longer routable (or lost a collision).
   */
  put(l: Lease, out: LeaseEvent[], same: (a: Lease, b: Lease) => boolean): void {
    const shape = this.shapeProblem(l);
    if (shape) {
      this.losers.delete(l.key);
      this.removeAccepted(l.key, out);
      this.refuse(l, shape.reason, shape.detail);
      return;
    }
    const rivals = this.collisions(l);
    const created = l.createRevision ?? Number.MAX_SAFE_INTEGER;
    const older = rivals.find((k) => (this.accepted.get(k)!.createRevision ?? Number.MAX_SAFE_INTEGER) <= created);
    if (older !== undefined) {
      this.removeAccepted(l.key, out);
      this.losers.set(l.key, l);
      this.refuse(l, 'overlaps_other', `collides with ${older}, created earlier`);
      return;
    }
    for (const k of rivals) {
      const lost = this.drop(k)!;
      out.push({ type: 'removed', lease: lost });
      this.losers.set(k, lost);
      this.refuse(lost, 'overlaps_other', `collides with ${l.key}, created earlier`);
    }
    this.losers.delete(l.key);
    this.refused.delete(l.key);
    const prev = this.accepted.get(l.key);
    if (prev) this.unindex(prev);
    this.accepted.set(l.key, l);
    this.index(l);
    if (!prev || !same(prev, l)) out.push({ type: 'added', lease: l });
  }

  /** A lease key was deleted (or its value turned unreadable): emit removed, and let a collision loser take its place. */
  delete(key: string, out: LeaseEvent[], same: (a: Lease, b: Lease) => boolean): void {
    this.losers.delete(key);
    this.refused.delete(key);
    const gone = this.removeAccepted(key, out);
    if (!gone || this.losers.size === 0) return;
    // Oldest first: the next winner is the lease created earliest.
    const waiting = [...this.losers.values()]
      .filter((w) => (gone.subnet && w.subnet?.ip === gone.subnet.ip) || (gone.ipv6Subnet && w.ipv6Subnet?.ip === gone.ipv6Subnet.ip))
      .sort((a, b) => (a.createRevision ?? 0) - (b.createRevision ?? 0));
    for (const w of waiting) {
      this.losers.delete(w.key);
      this.refused.delete(w.key);
      this.put(w, out, same);
    }
  }

  private removeAccepted(key: string, out: LeaseEvent[]): Lease | undefined {
    const prev = this.drop(key);
    if (prev) out.push({ type: 'removed', lease: prev });
    return prev;
  }
}

/** The events that take a follower of `before` to `after` (a re-listing replacing a set): removed, then added or changed. */
export function leaseSetChanges(before: LeaseSet, after: LeaseSet): LeaseEvent[] {
  const out: LeaseEvent[] = [];
  for (const [key, lease] of before.accepted) if (!after.accepted.has(key)) out.push({ type: 'removed', lease });
  for (const [key, lease] of after.accepted) {
    const prev = before.accepted.get(key);
    if (!prev || !sameLease(prev, lease)) out.push({ type: 'added', lease });
  }
  return out;
}
