import type { Logger } from '../log.js';
import type { NetworkConfig } from '../config/network.js';
import type { Lease, LeaseAttrs, LeaseEvent, SubnetManager } from '../subnet/types.js';
import type { ExternalInterface } from '../net/interfaces.js';
import type { MetricsRegistry } from '../metrics/registry.js';
import type { HealthReporter } from '../metrics/health.js';

/**
 * Switches of the userspace dataplane, read once at the edge (the CLI reads
 * FLANNEL_UDP_OFFLOAD / FLANNEL_UDP_GRO / FLANNEL_UDP_USO /
 * FLANNEL_UDP_WORKERS) and handed to backends.
 */
export interface DataplaneOptions {
  /** Ask for TUN offloads (TSO super-packets, UDP GSO); the plain path is used when the kernel refuses. */
  offload: boolean;
  /** With offloads: receive coalescing, i.e. UDP GRO on the socket and TCP/UDP super-packets written to TUN. */
  rxCoalesce: boolean;
  /** With offloads: ask for TUN UDP segmentation offload too (kernel 6.2+; falls back to TCP offloads). Default on. */
  uso?: boolean;
  /** Worker pairs when the backend config does not say (default: the number of cores, capped). */
  workers?: number;
  /** udp: the rx worker sends what the kernel answers into TUN during its writes (default on; FLANNEL_UDP_REPLY_FAST=0 for comparisons). */
  replyFastPath?: boolean;
  /** udp and wireguard userspace: workers run their packet code over loopback sockets before they start (dataplane/prime.ts; default on; FLANNEL_UDP_PRIME=0 for comparisons). */
  prime?: boolean;
  /** udp: lone packets hop in C (native/hop.c; default on; FLANNEL_UDP_NATIVE_HOP=0 for comparisons). */
  nativeHop?: boolean;
}

export const DEFAULT_DATAPLANE_OPTIONS: DataplaneOptions = { offload: true, rxCoalesce: true, uso: true };

/** Everything a backend may need from the daemon when it starts. */
export interface BackendContext {
  config: NetworkConfig;
  /** Raw Backend object from the network config (Type plus backend options). */
  backendConfig: Record<string, unknown>;
  extIface: ExternalInterface;
  subnetManager: SubnetManager;
  log: Logger;
  /** Prometheus-style counters exposed at /metrics, registered by the backend. */
  metrics: MetricsRegistry;
  /** Problems that make /healthz answer 503 while they last (e.g. a packet direction down). */
  health: HealthReporter;
  dataplane: DataplaneOptions;
  /**
   * A dry run (--dry-run): kernel backends read the kernel for real but only
   * record their writes, for plannedCommands() to report.
   */
  dryRun?: boolean;
  /**
   * Stop the daemon with this error (logged, exit 1): for a backend that
   * finds, after starting, that it cannot run. A half-working daemon that
   * keeps its lease is worse than one that stops and says why.
   */
  fatal(err: Error): void;
}

/** What a backend publishes in our lease (PublicIP and PublicIPv6 are the daemon's). */
export type BackendLeaseAttrs = Omit<LeaseAttrs, 'publicIP' | 'publicIPv6'>;

/**
 * A backend in two steps, as in flannel: before the lease exists it gets
 * ready to say what to publish (a vxlan device's MAC, a WireGuard public
 * key) and the MTU; once the lease is held it programs the dataplane and
 * follows lease events.
 */
export interface Backend {
  readonly type: string;
  /**
   * Create what the lease must describe (a device, a key) and return the
   * attributes to publish. `previous` is the lease this host held before
   * (found by PublicIP), so a restart can keep a MAC or key stable; null on
   * a first start.
   */
  prepare(previous: Lease | null): Promise<BackendLeaseAttrs>;
  /** MTU the pods should use (FLANNEL_MTU). */
  mtu(): number;
  /** Program the dataplane for our own lease; called once. */
  start(ownLease: Lease): Promise<void>;
  /** Apply other hosts' lease events (added: new or updated, removed). */
  handleEvents(events: LeaseEvent[]): Promise<void>;
  /** Stop the dataplane. Leaves kernel state that survives restarts, as flannel does. */
  stop(): Promise<void>;
  /** In a dry run: every command the backend would have run, in order ("ip ...", "bridge ..."). */
  plannedCommands?(): string[];
}

export type BackendFactory = (ctx: BackendContext) => Promise<Backend>;
