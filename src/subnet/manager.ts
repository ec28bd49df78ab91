/**
 * Subnet leases on top of any KvStore (etcd or the embedded store), with
 * flannel's key layout and rules:
 *   <prefix>/config               network config JSON
 *   <prefix>/subnets/A.B.C.D-LEN  lease JSON, TTL 24 h
 *
 * Acquisition reuses the lease carrying our PublicIP, else the previous
 * subnet (from subnet.env) when it is free, else a random free subnet among
 * the first 100 free ones between SubnetMin and SubnetMax. Creation is a
 * create-if-absent transaction, so two hosts never hold the same subnet.
 *
 * Watching is gap-free: list at revision R, watch from R+1; on any watch
 * failure, re-list and diff against what the caller already knows, so no
 * lease created or removed during an outage is missed.
 */
import { createLogger, type Logger } from '../log.js';
import { parseNetworkConfig, type NetworkConfig } from '../config/network.js';
import {
  formatIP4,
  formatIP4Net,
  formatIP6,
  formatIP6Net,
  ip4NetContains,
  ip4NetOverlaps,
  ip6NetContains,
  ip6NetOverlaps,
  makeSubnetKey,
  parseSubnetKey,
  type IP4Net,
  type IP6Net,
} from '../net/ipaddr.js';
import { decodeLease, decodeLeaseAttrs, encodeLeaseAttrs, LeaseDecodeError } from './lease-codec.js';
import { LeaseSet, leaseSetChanges, sameLease } from './lease-set.js';
import { StoreUnavailableError, type KvEvent, type KvStore, type KvWatcher } from './kv.js';
import { LeaseLostError, leaseHolder, type Lease, type LeaseAttrs, type LeaseEvent, type LeaseWatchCallbacks, type LeaseWatchHandle, type SubnetManager } from './types.js';

export const DEFAULT_PREFIX = '/coreos.com/network';
export const DEFAULT_LEASE_TTL_SECONDS = 24 * 60 * 60;
const RACE_RETRIES = 10;
const CANDIDATES = 100;

export class ConfigNotFoundError extends Error {
  constructor(key: string) {
    super(`network config not found at ${key}: put one, e.g. etcdctl put ${key} '{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}'`);
    this.name = 'ConfigNotFoundError';
  }
}

export class SubnetsExhaustedError extends Error {
  constructor(cfg: NetworkConfig, held: number) {
    super(
      `out of subnets: every /${cfg.subnetLen} between ${formatIP4(cfg.subnetMin)} and ${formatIP4(cfg.subnetMax)} in ${cfg.network ? formatIP4Net(cfg.network) : '?'} is leased (${held} leases held); widen Network or SubnetMin/SubnetMax, or remove stale leases`,
    );
    this.name = 'SubnetsExhaustedError';
  }
}

export interface KvSubnetManagerOptions {
  store: KvStore;
  prefix?: string;
  ttlSeconds?: number;
  log?: Logger;
  /** Random source for subnet choice (tests make it deterministic). */
  random?: () => number;
  /** Initial and maximum backoff for watch resync after store failures. */
  backoffMs?: { initial: number; max: number };
  /** Backend types a config may name (the backend registry's); absent: not checked. */
  backendTypes?: Iterable<string>;
}

/** The subnets subnet.env recorded for this host. */
type PreviousSubnets = { subnet?: IP4Net | null; ipv6Subnet?: IP6Net | null };

/** The lease a host holds, found as flannel does: by its PublicIP (an IPv6-only host's: its PublicIPv6, see leaseHolder). */
function heldBy<L extends Lease>(leases: Iterable<L>, holder: string): L | undefined {
  if (!holder) return undefined;
  for (const l of leases) if (leaseHolder(l.attrs) === holder) return l;
  return undefined;
}

export class KvSubnetManager implements SubnetManager {
  readonly name: string;
  private readonly store: KvStore;
  private readonly prefix: string;
  private readonly ttl: number;
  private readonly log: Logger;
  private readonly random: () => number;
  private readonly backoff: { initial: number; max: number };
  private readonly backendTypes: string[] | undefined;
  /** Malformed lease keys already logged (each is logged once). */

  /** Malformed keys already logged, with the problem logged (lease key -> reason:message). */
  private readonly loggedMalformed = new Map<string, string>();

  constructor(opts: KvSubnetManagerOptions) {
    this.store = opts.store;
    this.prefix = (opts.prefix ?? DEFAULT_PREFIX).replace(/\/+$/, '');
    this.ttl = opts.ttlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
    this.log = opts.log ?? createLogger('subnet');
    this.random = opts.random ?? Math.random;
    this.backoff = opts.backoffMs ?? { initial: 500, max: 10_000 };
    this.backendTypes = opts.backendTypes ? [...opts.backendTypes] : undefined;
    this.name = `${this.store.description} prefix=${this.prefix}`;
  }

  get configKey(): string {
    return `${this.prefix}/config`;
  }

  private get subnetsPrefix(): string {
    return `${this.prefix}/subnets/`;
  }

  async getNetworkConfig(): Promise<NetworkConfig> {
    const entry = await this.store.get(this.configKey);
    if (!entry) throw new ConfigNotFoundError(this.configKey);
    return parseNetworkConfig(entry.value, { backendTypes: this.backendTypes });
  }

  async findPreviousLease(holder: string, previous?: PreviousSubnets): Promise<Lease | null> {
    const atPrevious = await this.heldAt(previous, holder);
    if (atPrevious) return atPrevious;
    const { leases } = await this.listLeases();
    return heldBy(leases.values(), holder) ?? null;
  }

  /**
   * Our lease at the key subnet.env names, when it still carries our
   * PublicIP: a restart finds it with one get instead of listing every
   * lease (10,000 leases cost a daemon ~0.2 s of CPU per listing).
   */
  private async heldAt(previous: PreviousSubnets | undefined, holder: string): Promise<Lease | null> {
    if (!previous?.subnet && !previous?.ipv6Subnet) return null;
    const e = await this.store.get(this.fullKey(previous.subnet ?? null, previous.ipv6Subnet ?? null));
    if (!e) return null;
    try {
      const lease = decodeLease(e.key, e.value, e);
      return leaseHolder(lease.attrs) === holder ? lease : null;
    } catch (err) {
      if (err instanceof LeaseDecodeError) return null;
      throw err;
    }
  }

  /**
   * A key whose value does not decode, logged once per key and problem
   * (every listing and the watch see it again); the watch's LeaseSet counts
   * it for /metrics.
   */
  private noteMalformed(key: string, err: LeaseDecodeError): void {
    const tag = `${err.reason}:${err.message}`;
    if (this.loggedMalformed.get(key) === tag) return;
    // Bounded: a store full of garbage cannot grow it past the number of keys it holds.
    if (this.loggedMalformed.size >= 100_000) this.loggedMalformed.clear();
    this.loggedMalformed.set(key, tag);
    this.log.warn('skipping malformed lease', { lease: key, reason: err.reason, error: err.message });
  }

  /**
   * Every parsable lease, and the subnets of keys whose value is not: such a
   * key is still taken (create on it always fails), so acquisition must not
   * pick it. Each malformed key is logged once, not at every listing.
   */
  private async listLeases(): Promise<{ leases: Map<string, Lease>; unreadable: Lease[]; malformed: { key: string; err: LeaseDecodeError }[]; revision: number }> {
    const { entries, revision } = await this.store.list(this.subnetsPrefix);
    const leases = new Map<string, Lease>();
    const unreadable: Lease[] = [];
    const malformed: { key: string; err: LeaseDecodeError }[] = [];
    for (const e of entries) {
      try {
        const lease = decodeLease(e.key, e.value, e);
        leases.set(lease.key, lease);
      } catch (err) {
        if (!(err instanceof LeaseDecodeError)) throw err;
        const name = e.key.slice(e.key.lastIndexOf('/') + 1);
        malformed.push({ key: `subnets/${name}`, err });
        this.noteMalformed(`subnets/${name}`, err);
        const sn = parseSubnetKey(name);
        if (sn) unreadable.push({ subnet: sn.subnet, ipv6Subnet: sn.ipv6Subnet, attrs: { publicIP: '', publicIPv6: null }, expiration: 0, key: `subnets/${name}` });
      }
    }
    return { leases, unreadable, malformed, revision };
  }

  private compatible(cfg: NetworkConfig, sn: IP4Net | null, sn6: IP6Net | null): boolean {
    if (cfg.enableIPv4) {
      if (!sn || !cfg.network || sn.prefixLen !== cfg.subnetLen || !ip4NetContains(cfg.network, sn.ip)) return false;
      if (sn.ip < cfg.subnetMin || sn.ip > cfg.subnetMax) return false;
    } else if (sn) return false;
    if (cfg.enableIPv6) {
      if (!sn6 || !cfg.ipv6Network || sn6.prefixLen !== cfg.ipv6SubnetLen || !ip6NetContains(cfg.ipv6Network, sn6.ip)) return false;
      if (sn6.ip < cfg.ipv6SubnetMin || sn6.ip > cfg.ipv6SubnetMax) return false;
    } else if (sn6) return false;
    return true;
  }

  private fullKey(sn: IP4Net | null, sn6: IP6Net | null): string {
    return `${this.subnetsPrefix}${makeSubnetKey(sn, sn6)}`;
  }

  async acquireLease(attrs: LeaseAttrs, previous?: PreviousSubnets): Promise<Lease> {
    const cfg = await this.getNetworkConfig();
    for (let attempt = 0; attempt < RACE_RETRIES; attempt++) {
      const lease = await this.tryAcquire(cfg, attrs, previous);
      if (lease) return lease;
      this.log.info('lost a race for a subnet, retrying', { attempt: attempt + 1 });
    }
    throw new Error(`could not acquire a subnet after ${RACE_RETRIES} attempts: other hosts kept taking the chosen subnets`);
  }

  private async tryAcquire(cfg: NetworkConfig, attrs: LeaseAttrs, previous?: PreviousSubnets): Promise<Lease | null> {
    const value = encodeLeaseAttrs(attrs);
    // 0. A restart: the key subnet.env names still carries our PublicIP.
    const quick = await this.heldAt(previous, leaseHolder(attrs));
    if (quick && this.compatible(cfg, quick.subnet, quick.ipv6Subnet)) {
      const reused = await this.reuse(quick, attrs, value);
      if (reused) return reused;
    }
    const { leases, unreadable } = await this.listLeases();

    // 1. A lease that already carries our PublicIP is ours (a restart).
    const mine = heldBy(leases.values(), leaseHolder(attrs));
    if (mine) {
      if (this.compatible(cfg, mine.subnet, mine.ipv6Subnet)) return this.reuse(mine, attrs, value);
      this.log.warn('lease held by our PublicIP does not fit the network config, deleting it', { subnet: describe(mine) });
      await this.store.delete(this.fullKey(mine.subnet, mine.ipv6Subnet));
      leases.delete(mine.key);
    }

    // 2. The subnet we had before (subnet.env), when nobody holds it now.
    let sn: IP4Net | null = null;
    let sn6: IP6Net | null = null;
    const prevSn = previous?.subnet ?? null;
    const prevSn6 = previous?.ipv6Subnet ?? null;
    if (prevSn || prevSn6) {
      const taken = [...leases.values(), ...unreadable].some(
        (l) => (prevSn && l.subnet && ip4NetOverlaps(prevSn, l.subnet)) || (prevSn6 && l.ipv6Subnet && ip6NetOverlaps(prevSn6, l.ipv6Subnet)),
      );
      const previousText = describe({ subnet: prevSn, ipv6Subnet: prevSn6 });
      if (taken) {
        this.log.info('previous subnet is held by another host, picking a new one', { previous: previousText });
      } else if (this.compatible(cfg, prevSn, prevSn6)) {
        sn = prevSn;
        sn6 = prevSn6;
      } else {
        this.log.warn('previous subnet does not fit the network config, ignoring it', { previous: previousText });
      }
    }

    // 3. A random free one.
    if (!sn && !sn6) ({ subnet: sn, ipv6Subnet: sn6 } = this.pickFree(cfg, [...leases.values(), ...unreadable]));

    const rev = await this.store.create(this.fullKey(sn, sn6), value, this.ttl);
    if (rev === null) return null;
    const lease = this.leaseFor(sn, sn6, attrs, this.ttl, rev, rev);
    this.log.info('acquired lease', { subnet: describe(lease), publicIP: attrs.publicIP });
    return lease;
  }

  /** Take over our own earlier lease (compare on its modRevision); null on a lost race. */
  private async reuse(mine: Lease, attrs: LeaseAttrs, value: string): Promise<Lease | null> {
    // A lease without expiry is a reservation made by an operator: keep it without TTL.
    const ttl = mine.expiration === 0 ? undefined : this.ttl;
    const rev = await this.store.update(this.fullKey(mine.subnet, mine.ipv6Subnet), value, ttl, mine.modRevision);
    if (rev === null) return null;
    this.log.info('reusing the lease held by our PublicIP', { subnet: describe(mine), publicIP: attrs.publicIP });
    return this.leaseFor(mine.subnet, mine.ipv6Subnet, attrs, ttl, rev, mine.createRevision);
  }

  private leaseFor(sn: IP4Net | null, sn6: IP6Net | null, attrs: LeaseAttrs, ttl: number | undefined, modRevision: number, createRevision: number | undefined): Lease {
    return {
      subnet: sn,
      ipv6Subnet: sn6,
      attrs,
      expiration: ttl === undefined ? 0 : Date.now() + ttl * 1000,
      key: `subnets/${makeSubnetKey(sn, sn6)}`,
      modRevision,
      createRevision,
    };
  }

  /** Exposed for the allocation property test. */
  pickFree(cfg: NetworkConfig, held: readonly Lease[]): { subnet: IP4Net | null; ipv6Subnet: IP6Net | null } {
    let subnet: IP4Net | null = null;
    let ipv6Subnet: IP6Net | null = null;
    if (cfg.enableIPv4) {
      const size = 2 ** (32 - cfg.subnetLen);
      const free: number[] = [];
      const heldNets = held.map((l) => l.subnet).filter((s): s is IP4Net => s !== null);
      for (let ip = cfg.subnetMin; ip <= cfg.subnetMax && free.length < CANDIDATES; ip += size) {
        const candidate = { ip, prefixLen: cfg.subnetLen };
        if (!heldNets.some((h) => ip4NetOverlaps(h, candidate))) free.push(ip);
      }
      if (free.length === 0) throw new SubnetsExhaustedError(cfg, held.length);
      subnet = { ip: free[Math.floor(this.random() * free.length)]!, prefixLen: cfg.subnetLen };
    }
    if (cfg.enableIPv6) {
      const size = 1n << BigInt(128 - cfg.ipv6SubnetLen);
      const free: bigint[] = [];
      const heldNets = held.map((l) => l.ipv6Subnet).filter((s): s is IP6Net => s !== null);
      for (let ip = cfg.ipv6SubnetMin; ip <= cfg.ipv6SubnetMax && free.length < CANDIDATES; ip += size) {
        if (!heldNets.some((h) => ip6NetOverlaps(h, { ip, prefixLen: cfg.ipv6SubnetLen }))) free.push(ip);
      }
      if (free.length === 0) throw new Error(`out of IPv6 subnets between ${formatIP6(cfg.ipv6SubnetMin)} and ${formatIP6(cfg.ipv6SubnetMax)}`);
      ipv6Subnet = { ip: free[Math.floor(this.random() * free.length)]!, prefixLen: cfg.ipv6SubnetLen };
    }
    return { subnet, ipv6Subnet };
  }

  async renewLease(lease: Lease): Promise<Lease> {
    const key = this.fullKey(lease.subnet, lease.ipv6Subnet);
    const value = encodeLeaseAttrs(lease.attrs);
    // Compare on what we last wrote, so a key someone else rewrote is never extended as ours.
    let expected = lease.modRevision ?? 0;
    for (let attempt = 0; ; attempt++) {
      const rev = await this.store.update(key, value, this.ttl, expected);
      if (rev !== null) {
        const renewed = { ...lease, expiration: Date.now() + this.ttl * 1000, modRevision: rev };
        this.log.info('renewed lease', { subnet: describe(lease), expires: new Date(renewed.expiration).toISOString() });
        return renewed;
      }
      const now = await this.store.get(key);
      // Gone: nobody holds it, so it is ours to write back (create-if-absent).
      if (!now) return this.restoreLease(lease);
      // A PublicIP names one host (flannel's ownership rule): a write with ours is our own
      // (e.g. a renewal that timed out but landed); adopt its revision and compare again.
      if (this.holder(now.value) !== leaseHolder(lease.attrs) || attempt > 0) throw this.lost(lease, now.value);
      expected = now.modRevision;
    }
  }

  async restoreLease(lease: Lease): Promise<Lease> {
    const key = this.fullKey(lease.subnet, lease.ipv6Subnet);
    // Create-if-absent: if another host created the key first, it is theirs now.
    const rev = await this.store.create(key, encodeLeaseAttrs(lease.attrs), this.ttl);
    if (rev !== null) return { ...lease, expiration: Date.now() + this.ttl * 1000, modRevision: rev, createRevision: rev };
    const now = await this.store.get(key);
    if (!now) throw new StoreUnavailableError(`${this.store.description}: ${key} vanished while restoring it; retry`);
    // Our own earlier write (a restore or renewal that raced with this one) is still ours.
    if (this.holder(now.value) !== leaseHolder(lease.attrs)) throw this.lost(lease, now.value);
    return { ...lease, modRevision: now.modRevision, createRevision: now.createRevision, expiration: now.expiresAt ?? 0 };
  }

  /** The holder (leaseHolder) of a lease value, or "" when it cannot be read. */
  private holder(value: string): string {
    try {
      return leaseHolder(decodeLeaseAttrs('', value));
    } catch {
      return '';
    }
  }

  private lost(lease: Lease, value: string): LeaseLostError {
    const other = this.holder(value);
    return new LeaseLostError(describe(lease), other ? `the key now belongs to PublicIP ${other}` : 'the key now holds an unreadable value written by someone else');
  }

  async watchLeases(ownLease: Lease, config: NetworkConfig, callbacks: LeaseWatchCallbacks): Promise<LeaseWatchHandle> {
    let set = new LeaseSet(config, ownLease, this.log);
    let watcher: KvWatcher | null = null;
    let closed = false;
    let timer: NodeJS.Timeout | null = null;
    let delay = this.backoff.initial;
    let healthy = true;
    const log = this.log;
    const ownHolder = leaseHolder(ownLease.attrs);

    const emit = (events: LeaseEvent[]) => {
      if (events.length > 0 && !closed) callbacks.onEvents(events);
    };

    /** A write to our own key: someone else's lease there means we lost the subnet. */
    const ownKeyWritten = (value: string) => {
      const holder = this.holder(value);
      if (holder === ownHolder) return; // our own write (renewal, restore) echoed back
      log.error('our lease key now holds another host\'s lease', { subnet: describe(ownLease), holder: holder || '(unreadable)' });
      callbacks.onOwnLeaseTaken?.(holder || '(unreadable value)');
    };

    const applyKvEvents = (kvEvents: KvEvent[]) => {
      const out: LeaseEvent[] = [];
      for (const ev of kvEvents) {
        if (!ev.key.startsWith(this.subnetsPrefix)) continue;
        const name = `subnets/${ev.key.slice(this.subnetsPrefix.length)}`;
        if (name === ownLease.key) {
          if (ev.type === 'delete') {
            log.warn('our own lease was removed from the store', { subnet: describe(ownLease) });
            callbacks.onOwnLeaseRemoved?.();
          } else ownKeyWritten(ev.value);
          continue;
        }
        if (ev.type === 'delete') {
          set.delete(name, out, sameLease);
          continue;
        }
        let lease: Lease;
        try {
          lease = decodeLease(ev.key, ev.value, { expires: ev.expires, expiresAt: ev.expiresAt, modRevision: ev.revision, createRevision: ev.createRevision });
        } catch (err) {
          if (!(err instanceof LeaseDecodeError)) throw err;
          // A lease that turned malformed can no longer be trusted: treat it as gone.
          this.noteMalformed(name, err);
          set.rejectMalformed(name, err, out, sameLease);
          continue;
        }
        set.put(lease, out, sameLease);
      }
      emit(out);
    };

    const resync = async (): Promise<void> => {
      timer = null;
      if (closed) return;
      try {
        const { leases, malformed, revision } = await this.listLeases();
        // Rebuild from the listing, oldest first so collisions resolve as they would have live, then diff.
        const fresh = new LeaseSet(config, ownLease, log, set);
        const ignore: LeaseEvent[] = [];
        for (const m of malformed) if (m.key !== ownLease.key) fresh.rejectMalformed(m.key, m.err, ignore, sameLease);
        const others = [...leases.values()].filter((l) => l.key !== ownLease.key).sort((a, b) => (a.createRevision ?? 0) - (b.createRevision ?? 0));
        for (const l of others) fresh.put(l, ignore, sameLease);
        const out = leaseSetChanges(set, fresh);
        set = fresh;
        const own = leases.get(ownLease.key);
        if (!own) {
          log.warn('our own lease is missing from the store', { subnet: describe(ownLease) });
          callbacks.onOwnLeaseRemoved?.();
        } else if (leaseHolder(own.attrs) !== ownHolder) {
          ownKeyWritten(encodeLeaseAttrs(own.attrs));
        }
        emit(out);
        if (closed) return;
        watcher = await this.store.watch(this.subnetsPrefix, revision + 1, {
          onEvents: applyKvEvents,
          onError: (err) => {
            watcher = null;
            if (closed) return;
            if (healthy) log.warn('lost the lease watch, will resync', { store: this.store.description, error: err.message });
            healthy = false;
            schedule();
          },
        });
        if (closed) {
          await watcher.close();
          return;
        }
        if (!healthy) log.info('store reachable again, leases resynced', { store: this.store.description, leases: set.accepted.size });
        healthy = true;
        delay = this.backoff.initial;
      } catch (err) {
        if (healthy) {
          log.warn('cannot list leases, keeping the last known ones and retrying', {
            store: this.store.description,
            error: (err as Error).message,
          });
        }
        healthy = false;
        if (!(err instanceof StoreUnavailableError)) log.debug('resync error', { error: (err as Error).message });
        schedule();
      }
    };

    const schedule = () => {
      if (closed || timer) return;
      timer = setTimeout(() => void resync(), delay);
      delay = Math.min(delay * 2, this.backoff.max);
    };

    await resync();
    return {
      close: async () => {
        closed = true;
        if (timer) clearTimeout(timer);
        if (watcher) await watcher.close();
      },
      stats: () => ({ accepted: set.accepted.size, rejected: { ...set.rejectedTotal } }),
    };
  }

  async close(): Promise<void> {
    await this.store.close();
  }
}

export function describe(l: { subnet: IP4Net | null; ipv6Subnet: IP6Net | null }): string {
  const parts = [];
  if (l.subnet) parts.push(formatIP4Net(l.subnet));
  if (l.ipv6Subnet) parts.push(formatIP6Net(l.ipv6Subnet));
  return parts.join(',');
}
