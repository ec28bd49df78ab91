import type { Logger } from '../log.js';
import type { NetworkConfig } from '../config/network.js';
import type { Lease, LeaseAttrs, LeaseEvent, SubnetManager } from '../subnet/types.js';
import type { ExternalInterface } from '../net/interfaces.js';

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
}

export interface MetricsRegistry {
  /** Register a callback rendering lines of Prometheus text exposition format. */
  register(name: string, render: () => string): void;
}

/**
 * A backend in two steps, as in flannel: before the lease exists it tells
 * what to publish (BackendType/BackendData) and the MTU; once the lease is
 * held it programs the dataplane and follows lease events.
 */
export interface Backend {
  readonly type: string;
  /** Attributes to publish in our lease (called before acquiring it). */
  leaseAttrs(): Promise<Omit<LeaseAttrs, 'publicIP' | 'publicIPv6'>>;
  /** MTU the pods should use (FLANNEL_MTU). */
  mtu(): number;
  /** Program the dataplane for our own lease; called once. */
  start(ownLease: Lease): Promise<void>;
  /** Apply lease events of other hosts (added, changed, removed). */
  handleEvents(events: LeaseEvent[]): Promise<void>;
  /** Stop the dataplane. Leaves kernel state that survives restarts, as flannel does. */
  stop(): Promise<void>;
}

export type BackendFactory = (ctx: BackendContext) => Promise<Backend>;
