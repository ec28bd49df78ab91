/**
 * What flannel's backend/route_network.go does for host-gw, ipip and vxlan
 * DirectRouting, written once for our kernel backends: keep one route per
 * remote lease of our backend type, hand the whole desired set to the
 * backend's applier whenever it changes, and hand it over again
 * periodically so a route someone deleted by hand comes back.
 *
 * It decides nothing about the kernel: `routeFor` says which route a lease
 * calls for (or null when none can work, e.g. a peer off our link) and
 * `apply` makes the kernel match the set it is given.
 */
import type { Logger } from '../log.js';
import type { Lease, LeaseEvent } from '../subnet/types.js';
import { describe } from '../subnet/manager.js';

export interface RouteNetworkOptions<R> {
  /** Only leases published with this BackendType get a route; flannel skips the others the same way. */
  backendType: string;
  /** The route a remote lease calls for, or null when none can work (say why in the log). */
  routeFor(lease: Lease): R | null;
  /**
   * Make the kernel hold exactly these routes (by lease key) of ours.
   * `recheck` is true for the periodic round, which must look at the kernel
   * again (someone may have deleted a route by hand); lease-event rounds may
   * trust what the last round left. `changed` names the leases whose
   * route changed since the last round (null: a full round).
   */
  apply(routes: ReadonlyMap<string, R>, recheck: boolean, changed: ReadonlySet<string> | null): Promise<void>;
  log: Logger;
  /** How often the full set is applied again (flannel checks every 10 s). 0: never. */
  recheckMs?: number;
}

export class RouteNetwork<R> {
  private readonly routes = new Map<string, R>();
  /** Leases skipped for their BackendType, so each is logged once, not at every renewal. */
  private readonly skipped = new Set<string>();
  private timer: NodeJS.Timeout | null = null;
  private applying: Promise<void> = Promise.resolve();
  /** Leases whose route changed since the last round was handed over (what a change round looks at). */
  private changed = new Set<string>();

  constructor(private readonly opts: RouteNetworkOptions<R>) {}

  /** Start the periodic re-check. */
  start(): void {
    const every = this.opts.recheckMs ?? 10_000;
    if (every <= 0 || this.timer) return;
    this.timer = setInterval(() => void this.reapply('periodic check', true), every);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Follow a batch of lease events; applies once per batch, and only when the desired set changed. */
  async handleEvents(events: LeaseEvent[]): Promise<void> {
    let changed = false;
    for (const ev of events) {
      const key = ev.lease.key;
      if (ev.type === 'removed') {
        this.skipped.delete(key);
        changed = this.drop(key) || changed;
        continue;
      }
      const type = ev.lease.attrs.backendType ?? '';
      if (type !== this.opts.backendType) {
        if (!this.skipped.has(key)) {
          this.skipped.add(key);
          this.opts.log.warn('ignoring lease of another backend type', { subnet: describe(ev.lease), backendType: type || '(none)', want: this.opts.backendType });
        }
        changed = this.drop(key) || changed;
        continue;
      }
      this.skipped.delete(key);
      const route = this.opts.routeFor(ev.lease);
      if (route === null) {
        changed = this.drop(key) || changed;
        continue;
      }
      const prev = this.routes.get(key);
      if (prev !== undefined && JSON.stringify(prev) === JSON.stringify(route)) continue;
      this.routes.set(key, route);
      this.changed.add(key);
      changed = true;
    }
    if (changed) await this.reapply('lease events', false);
  }

  private drop(key: string): boolean {
    if (!this.routes.delete(key)) return false;
    this.changed.add(key);
    return true;
  }

  /** The desired routes, by lease key. */
  desired(): ReadonlyMap<string, R> {
    return this.routes;
  }

  /** Apply the whole set; calls never overlap, and a failure is logged and retried at the next check. */
  reapply(why: string, recheck = true): Promise<void> {
    this.applying = this.applying.then(() => {
      // What changed up to now goes into this round; a full round covers everything.
      const changed = this.changed;
      this.changed = new Set();
      return this.opts.apply(this.routes, recheck, recheck ? null : changed).catch((err: Error) => this.opts.log.error('cannot apply routes', { why, error: err.message }));
    });
    return this.applying;
  }
}
