/**
 * What every kernel backend (vxlan, host-gw, ipip) does with lease events,
 * written once: a RouteNetwork keeps the per-peer state each remote lease
 * calls for (filtered by BackendType, re-applied every 10 s), and the
 * shared KernelStateApplier makes the kernel match it in one batch per round.
 */
import type { Logger } from '../log.js';
import type { Lease, LeaseEvent } from '../subnet/types.js';
import { IpRoute } from '../net/iproute.js';
import { KernelStateApplier, type FdbSpec, type KernelScope, type KernelState, type NeighSpec, type RouteSpec } from '../net/kernel-state.js';
import type { XfrmPolicySpec } from '../net/xfrm-policy.js';
import { RouteNetwork } from './route-network.js';

/** The kernel state one remote lease needs. */
export interface PeerState {
  routes: RouteSpec[];
  neighs?: NeighSpec[];
  fdb?: FdbSpec[];
  policies?: XfrmPolicySpec[];
}

export interface KernelRoutingOptions {
  backendType: string;
  scope: KernelScope;
  /** The state a lease calls for, or null (logged by the backend) when none can work. */
  peerState(lease: Lease): PeerState | null;
  log: Logger;
  /** Write runners; plan-mode ones record instead (dry run, tests). */
  ip?: IpRoute;
  bridge?: IpRoute;
  /** Read runners (default: real ip and bridge, also in a dry run: reading changes nothing). */
  readIp?: IpRoute;
  readBridge?: IpRoute;
  recheckMs?: number;
}

/** Runners of a kernel backend: writes (real, or recorded in a dry run) and reads (always real). */
export interface KernelRunners {
  ip: IpRoute;
  readIp: IpRoute;
  bridge: IpRoute;
  /** What plan-mode writers recorded (empty unless dryRun). */
  transcript: string[];
}

/** A reader for what `writer` changes: the writer itself, or a real runner when the writer only plans. */
export function readerFor(writer: IpRoute, binary?: string): IpRoute {
  return writer.planning ? new IpRoute(binary ? { binary } : {}) : writer;
}

/**
 * The runners of a kernel backend: real ones, or in a dry run plan-mode
 * writers sharing one transcript; a test may pass its own (`overrides`).
 */
export function kernelRunners(dryRun: boolean | undefined, overrides: { ip?: IpRoute; readIp?: IpRoute; bridge?: IpRoute } = {}): KernelRunners {
  const transcript: string[] = [];
  const mode = dryRun ? 'plan' : 'run';
  const ip = overrides.ip ?? new IpRoute({ mode, transcript: dryRun ? transcript : undefined });
  const bridge = overrides.bridge ?? new IpRoute({ mode, binary: 'bridge', transcript: dryRun ? transcript : undefined });
  return { ip, readIp: overrides.readIp ?? readerFor(ip), bridge, transcript };
}

export class KernelRouting {
  readonly applier: KernelStateApplier;
  private readonly network: RouteNetwork<PeerState>;

  constructor(opts: KernelRoutingOptions) {
    const ip = opts.ip ?? new IpRoute();
    const bridge = opts.bridge ?? new IpRoute({ binary: 'bridge' });
    this.applier = new KernelStateApplier({
      scope: opts.scope,
      readIp: opts.readIp ?? readerFor(ip),
      readBridge: opts.readBridge ?? readerFor(bridge, 'bridge'),
      writeIp: ip,
      writeBridge: bridge,
      log: opts.log,
    });
    this.network = new RouteNetwork<PeerState>({
      backendType: opts.backendType,
      routeFor: (l) => opts.peerState(l),
      apply: async (peers, recheck, changed) => {
        const r =
          recheck || changed === null
            ? await this.applier.apply(merge(peers), { reread: recheck })
            : await this.applier.applyChanges(new Map([...changed].map((k) => [k, stateOf(peers.get(k))])), () => merge(peers));
        if (r.lines.length > 0) {
          opts.log.info('kernel state updated', { changes: r.lines.length, failed: r.failures.length });
          opts.log.debug('kernel state lines', { lines: r.lines.slice(0, 50).join('; ') });
        }
      },
      log: opts.log,
      recheckMs: opts.recheckMs,
    });
  }

  /**
   * Reconcile every recheck interval. The first round comes with the leases
   * listed at start, not before: an empty round now would remove a
   * restarted daemon's routes only to put them back (a flap).
   */
  start(): void {
    this.network.start();
  }

  handleEvents(events: LeaseEvent[]): Promise<void> {
    return this.network.handleEvents(events);
  }

  /** Current desired state (for a dry run: feed events, then ask the applier). */
  desired(): KernelState {
    return merge(this.network.desired());
  }

  stop(): void {
    this.network.stop();
  }
}

/** One lease's state as the applier takes it (null: the lease has none any more). */
function stateOf(p: PeerState | undefined): KernelState | null {
  return p ? { routes: p.routes, neighs: p.neighs ?? [], fdb: p.fdb ?? [], policies: p.policies ?? [] } : null;
}

/** Every lease's state in one, each entry tagged with its lease (the applier names it when the entry fails). */
function merge(peers: ReadonlyMap<string, PeerState>): KernelState {
  const policies: XfrmPolicySpec[] = [];
  const s: KernelState = { routes: [], neighs: [], fdb: [], policies };
  for (const [origin, p] of peers) {
    if (p.policies) for (const x of p.policies) policies.push({ ...x, origin });
    for (const x of p.routes) s.routes.push({ ...x, origin });
    if (p.neighs) for (const x of p.neighs) s.neighs.push({ ...x, origin });
    if (p.fdb) for (const x of p.fdb) s.fdb.push({ ...x, origin });
  }
  return s;
}
