/**
 * The route-sync loop the cloud backends share. It runs beside the daemon,
 * never on the packet path and never in the way of lease renewal: lease
 * events only mark the table dirty, and one reconcile round later brings the
 * cloud's route table in line.
 *
 * What a round does, per route table:
 * - our lease: create the route to our instance; replace one for our CIDR
 *   that is a blackhole or points elsewhere; leave it alone when it is right
 *   (a restart that finds its route makes no write);
 * - leases that went away: delete their route only when a flannel daemon
 *   wrote it for that lease's host: it carries flannel's mark (GCE's route
 *   name, Aliyun's entry name), or, where the cloud keeps no mark (EC2), it
 *   points at the target the departed host's daemon writes (the ENI holding
 *   its PublicIP, looked up while the lease lived); and it still points
 *   where it pointed while the lease lived. A route somebody else made for
 *   that CIDR, or one nothing ties to the departed host, is never touched;
 * - warn once when a table nears the cloud's route limit, and report a
 *   clear error when it is full.
 *
 * Failures: throttling, 5xx and an absent metadata service are retried with
 * exponential backoff and jitter; credentials refused or a missing
 * permission stop the daemon with one clear line (retrying cannot help).
 * Each problem is logged when it starts and when it ends, not at every try.
 */
import type { Logger } from '../../log.js';
import type { HealthReporter } from '../../metrics/health.js';
import type { LeaseEvent } from '../../subnet/types.js';
import { formatIP4Net } from '../../net/ipaddr.js';
import { CloudError, type CloudIdentity, type CloudRoute, type RouteCloud } from './types.js';
import type { CloudCounters } from './counters.js';

/** What is known of another host's lease and its route. */
interface LeaseRoute {
  publicIP: string;
  /** What its route pointed at when we last looked (null: not seen yet). */
  seen: string | null;
  /** The target that host's daemon writes (clouds without route marks); undefined until looked up, null when not found. */
  hostTarget?: string | null;
}

export interface RouteSyncOptions {
  cloud: RouteCloud;
  counters: CloudCounters;
  log: Logger;
  health: HealthReporter;
  /** Stop the daemon (exit 1) with this error. */
  fatal(err: Error): void;
  /** Lease events arriving within this window make one round (default 200 ms). */
  coalesceMs?: number;
  /** First retry pause; doubles per failure up to maxBackoffMs, with jitter (default 1 s .. 60 s). */
  backoffMs?: number;
  maxBackoffMs?: number;
  /** A round this often even without events, to put back a route deleted by hand (default 5 min). */
  recheckMs?: number;
}

export class RouteSync {
  private identity: CloudIdentity | null = null;
  private ownDest: string | null = null;
  /** Other hosts' lease subnets, and what is known of their routes. */
  private readonly live = new Map<string, LeaseRoute>();
  /** Subnets whose lease went away, with what was known of their routes, to delete them if ours and still so. */
  private readonly departed = new Map<string, LeaseRoute>();
  private timer: NodeJS.Timeout | null = null;
  private timerDue = Infinity;
  private running: Promise<void> | null = null;
  private again = false;
  private failures = 0;
  private unseenLooks = 0;
  private problem: string | null = null;
  private readonly nearLimitWarned = new Set<string>();
  private stopped = false;

  constructor(private readonly opts: RouteSyncOptions) {}

  /** Begin with our lease's subnet: discovery, then the first round, in the background. */
  start(ownSubnet: string): void {
    this.ownDest = ownSubnet;
    this.opts.health.report(this.opts.cloud.name, `route for ${ownSubnet} not in place yet`);
    this.schedule(0);
  }

  /** Follow other hosts' leases; a burst of events becomes one round. */
  leasesChanged(events: LeaseEvent[]): void {
    let changed = false;
    for (const ev of events) {
      if (!ev.lease.subnet) continue;
      const dest = formatIP4Net(ev.lease.subnet);
      if (dest === this.ownDest) continue;
      if (ev.type === 'added') {
        // A new lease is looked at in the next round, so that its route's target is known when it goes.
        const have = this.live.get(dest);
        if (!have || have.publicIP !== ev.lease.attrs.publicIP) {
          this.live.set(dest, { publicIP: ev.lease.attrs.publicIP, seen: null });
          changed = true;
        }
        this.departed.delete(dest);
        continue;
      }
      const known = this.live.get(dest);
      this.live.delete(dest);
      // A route never seen while the lease lived is not known to be the lease's: it stays.
      if (known) this.departed.set(dest, known);
      changed = true;
    }
    if (changed) this.schedule(this.opts.coalesceMs ?? 200);
  }

  /**
   * Stop: no new round; the one in progress (if any) gets a few seconds to
   * finish its write, so a SIGTERM is not held up by a slow cloud.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    if (!this.running) return;
    let grace: NodeJS.Timeout | undefined;
    await Promise.race([this.running, new Promise<void>((r) => (grace = setTimeout(r, 5000)))]);
    clearTimeout(grace);
  }

  /** True after a round that ended with the tables in line, until a round fails. */
  get synced(): boolean {
    return this.opts.counters.reconciles > 0 && this.problem === null;
  }

  /** Rounds that ended with the tables in line, since start. */
  get completedRounds(): number {
    return this.opts.counters.reconciles;
  }

  private schedule(delayMs: number): void {
    if (this.stopped) return;
    const due = Date.now() + delayMs;
    if (this.timer && this.timerDue <= due) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerDue = due;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.timerDue = Infinity;
      this.kick();
    }, delayMs);
    this.timer.unref?.();
  }

  private kick(): void {
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.loop().finally(() => (this.running = null));
  }

  private async loop(): Promise<void> {
    do {
      this.again = false;
      try {
        await this.round();
        this.succeeded();
      } catch (err) {
        this.failed(err as Error);
        return;
      }
    } while (this.again && !this.stopped);
    this.schedule(this.nextLookMs());
  }

  /**
   * When the next round without events is due: the periodic recheck, or
   * sooner while another host's route has not shown up yet (its daemon may
   * still be writing it), so that we know where it pointed if the lease goes.
   */
  private nextLookMs(): number {
    const recheck = this.opts.recheckMs ?? 300_000;
    const unseen = [...this.live.values()].some((t) => t.seen === null);
    if (!unseen) {
      this.unseenLooks = 0;
      return recheck;
    }
    this.unseenLooks++;
    return Math.min(recheck, 2000 * 2 ** Math.min(this.unseenLooks - 1, 5));
  }

  private async round(): Promise<void> {
    const { cloud, log } = this.opts;
    if (!this.identity) {
      const identity = await cloud.discover();
      log.info('cloud identity', { ...identity.describe, target: identity.target, routeTables: identity.tables.join(',') });
      this.identity = identity;
      if (cloud.afterDiscover) await cloud.afterDiscover(identity);
    }
    const { target, tables } = this.identity;
    const ownDest = this.ownDest!;
    await this.lookUpHostTargets();
    for (const table of tables) {
      const routes = await cloud.listRoutes(table);
      const byDest = new Map(routes.map((r) => [r.dest, r]));
      for (const [dest, l] of this.live) {
        const now = byDest.get(dest)?.target ?? null;
        if (now && now !== l.seen) log.debug('another host\'s route is in place', { table, dest, target: now });
        l.seen = now;
      }

      const own = byDest.get(ownDest);
      if (!own) {
        this.checkRoom(table, routes.length);
        await cloud.createRoute(table, ownDest, target);
        this.opts.counters.write('create');
        log.info('created route', { table, dest: ownDest, target });
      } else if (own.foreign) {
        throw new CloudError('blocked', `route table ${table} has a route for our subnet ${ownDest} that is not an instance route (${own.target ?? 'a gateway'}): it is not ours to replace; remove it or pick a Network that does not overlap the VPC's routes`);
      } else if (own.state === 'blackhole' || own.target !== target) {
        await cloud.replaceRoute(table, own, target);
        this.opts.counters.write('replace');
        log.info('replaced route', { table, dest: ownDest, was: own.state === 'blackhole' ? 'blackhole' : own.target, target });
      }

      for (const [dest, gone] of this.departed) {
        const r = byDest.get(dest);
        if (!r || r.foreign || !this.writtenFor(r, gone)) continue;
        await cloud.deleteRoute(table, r);
        this.opts.counters.write('delete');
        log.info('deleted route of a lease that went away', { table, dest, target: r.target ?? 'none', state: r.state });
      }
    }
    this.departed.clear();
  }

  /**
   * Whether a flannel daemon wrote route `r` for the departed lease: it
   * still points where it pointed while the lease lived, and it carries
   * flannel's mark, or (no marks in this cloud) that is the target the
   * departed host's daemon writes.
   */
  private writtenFor(r: CloudRoute, gone: LeaseRoute): boolean {
    if (gone.seen === null || r.target !== gone.seen) return false;
    if (r.written !== undefined) return r.written;
    return gone.hostTarget !== undefined && gone.hostTarget !== null && gone.hostTarget === r.target;
  }

  /** Clouds without route marks: the targets new leases' hosts write, one call for all of them. */
  private async lookUpHostTargets(): Promise<void> {
    const cloud = this.opts.cloud;
    if (!cloud.targetOfHosts) return;
    const pending = [...this.live.values()].filter((l) => l.hostTarget === undefined);
    if (pending.length === 0) return;
    const found = await cloud.targetOfHosts([...new Set(pending.map((l) => l.publicIP))]);
    for (const l of pending) l.hostTarget = found.get(l.publicIP) ?? null;
  }

  private checkRoom(table: string, used: number): void {
    const limit = this.opts.cloud.routeLimit;
    if (used >= limit) {
      throw new CloudError('blocked', `route table ${table} is full (${used} of ${limit} routes): ask the cloud for a higher limit, remove unused routes, or use the vxlan backend`);
    }
    if (used + 1 >= Math.ceil(limit * 0.9) && !this.nearLimitWarned.has(table)) {
      this.nearLimitWarned.add(table);
      this.opts.log.warn('route table is nearly full', { table, routes: used + 1, limit });
    }
  }

  private succeeded(): void {
    this.opts.counters.reconciles++;
    this.failures = 0;
    if (this.problem) this.opts.log.info('cloud routes in place again', { after: this.problem });
    else this.opts.log.debug('cloud routes in place');
    this.problem = null;
    this.opts.health.report(this.opts.cloud.name, null);
  }

  private failed(err: Error): void {
    this.opts.counters.reconcileFailures++;
    const cloudErr = err instanceof CloudError ? err : new CloudError('retry', err.message);
    if (cloudErr.kind === 'fatal') {
      this.stopped = true;
      this.problem = cloudErr.message;
      this.opts.health.report(this.opts.cloud.name, cloudErr.message);
      this.opts.fatal(new Error(`${this.opts.cloud.name}: ${cloudErr.message}`));
      return;
    }
    this.failures++;
    const base = this.opts.backoffMs ?? 1000;
    const max = this.opts.maxBackoffMs ?? 60_000;
    // A full table frees up only when a person acts: no point asking at the fast rate.
    const ceiling = cloudErr.kind === 'blocked' ? max : Math.min(max, base * 2 ** (this.failures - 1));
    const delay = Math.round(ceiling * (0.5 + Math.random() * 0.5));
    // conflict: someone wrote the same route between our read and our write; look again at once.
    const wait = cloudErr.kind === 'conflict' ? Math.min(delay, base) : delay;
    if (cloudErr.message !== this.problem) {
      this.problem = cloudErr.message;
      const level = cloudErr.kind === 'conflict' ? 'info' : 'error';
      this.opts.log[level]('cloud route sync failed, will retry', { error: cloudErr.message, retryInMs: wait });
    } else {
      this.opts.log.debug('cloud route sync still failing', { error: cloudErr.message, retryInMs: wait, failures: this.failures });
    }
    this.opts.health.report(this.opts.cloud.name, cloudErr.message);
    this.schedule(wait);
  }
}
