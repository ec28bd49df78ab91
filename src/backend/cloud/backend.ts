/**
 * A cloud route-sync backend as the daemon sees it: no device, no
 * encapsulation (pods use the link's MTU), flannel's lease without
 * BackendType or BackendData, and the route-sync loop following the leases.
 */
import type { Backend, BackendContext } from '../types.js';
import type { Lease, LeaseEvent } from '../../subnet/types.js';
import { formatIP4Net } from '../../net/ipaddr.js';
import { RouteSync, type RouteSyncOptions } from './route-sync.js';
import type { RouteCloud } from './types.js';
import type { CloudCounters } from './counters.js';

export type RouteSyncTuning = Pick<RouteSyncOptions, 'coalesceMs' | 'backoffMs' | 'maxBackoffMs' | 'recheckMs'>;

export class CloudRouteBackend implements Backend {
  readonly type: string;
  readonly sync: RouteSync;

  constructor(
    private readonly ctx: BackendContext,
    cloud: RouteCloud,
    counters: CloudCounters,
    tuning: RouteSyncTuning = {},
  ) {
    if (!ctx.config.network) throw new Error(`${cloud.name} backend: IPv6-only networks are not supported (cloud route tables are programmed for IPv4 leases)`);
    this.type = cloud.name;
    this.sync = new RouteSync({ cloud, counters, log: ctx.log, health: ctx.health, fatal: (e) => ctx.fatal(e), ...tuning });
    ctx.metrics.register(cloud.name, () => counters.render());
  }

  async prepare() {
    // flannel's cloud backends publish only PublicIP: {"PublicIP":"10.0.1.5","PublicIPv6":null}.
    return {};
  }

  mtu(): number {
    return this.ctx.extIface.mtu;
  }

  async start(ownLease: Lease): Promise<void> {
    this.sync.start(formatIP4Net(ownLease.subnet!));
  }

  async handleEvents(events: LeaseEvent[]): Promise<void> {
    this.sync.leasesChanged(events);
  }

  stop(): Promise<void> {
    return this.sync.stop();
  }
}
