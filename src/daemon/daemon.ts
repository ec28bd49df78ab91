/**
 * flanneld's life: pick the interface, read the network config, lease a
 * subnet, start the backend, write subnet.env, follow other leases, renew
 * ours, and stop cleanly on SIGTERM/SIGINT (keeping the lease, as flannel).
 */
import type { Server } from 'node:http';
import { setLogLevel, createLogger, type LogLevel } from '../log.js';
import type { DaemonOptions } from './options.js';
import { ConfigError, type NetworkConfig } from '../config/network.js';
import { selectExternalInterface } from '../net/interfaces.js';
import { formatIP4Net, formatIP6Net } from '../net/ipaddr.js';
import { BUILTIN_BACKENDS, type BackendRegistry } from '../backend/registry.js';
import { BackendOptionError, BackendUnavailableError } from '../backend/errors.js';
import { LockHeldError } from '../native/exclusive-lock.js';
import { DEFAULT_DATAPLANE_OPTIONS, type Backend, type DataplaneOptions } from '../backend/types.js';
import { ConfigNotFoundError, DEFAULT_LEASE_TTL_SECONDS, KvSubnetManager, describe } from '../subnet/manager.js';
import { StoreUnavailableError } from '../subnet/kv.js';
import { openStore } from '../subnet/open-store.js';
import { readPreviousSubnets, renderSubnetEnv, writeSubnetEnv } from '../subnet/subnet-env.js';
import { LeaseLostError, NO_PUBLIC_IP, leaseHolder, type Lease, type LeaseEvent, type LeaseWatchHandle, type SubnetManager } from '../subnet/types.js';
import { Readiness } from '../metrics/readiness.js';
import { Metrics } from '../metrics/registry.js';
import { startHealthz } from '../metrics/healthz.js';
import { Health } from '../metrics/health.js';

const log = createLogger('flanneld');

/** Errors that mean "fix your setup", reported in one line with exit 1. */
export class FatalError extends Error {}

/** A backend that cannot run with this config on this host is a setup error: one line, before anything is touched. */
function asFatal(err: Error): never {
  throw err instanceof BackendOptionError || err instanceof BackendUnavailableError || err instanceof LockHeldError ? new FatalError(err.message) : err;
}

/** Settings that are not flannel flags: read from the environment by the CLI, or set by tests. */
export interface DaemonSettings {
  /** Lease TTL in seconds (default 24 h; tests shorten it to watch renewals). */
  leaseTtlSeconds?: number;
  /** Userspace dataplane switches (default: offloads and receive coalescing on). */
  dataplane?: DataplaneOptions;
  /** Where backend types come from (default: the built-in ones). */
  backends?: BackendRegistry;
  /** Kubernetes mode: NODE_NAME, POD_NAME/POD_NAMESPACE, KUBERNETES_SERVICE_HOST/PORT (default: process.env). */
  env?: NodeJS.ProcessEnv;
  /** Kubernetes mode: backoff while waiting for the API server (tests shorten it). */
  kubeBackoffMs?: { initial: number; max: number };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Retry an operation while the store is unreachable, logging once per state change. */
async function whileUnavailable<T>(what: string, fn: () => Promise<T>, stopping: () => boolean): Promise<T> {
  let delay = 500;
  let warned = false;
  for (;;) {
    try {
      const v = await fn();
      if (warned) log.info(`store reachable again: ${what} done`);
      return v;
    } catch (err) {
      const retriable = err instanceof StoreUnavailableError || err instanceof ConfigNotFoundError;
      if (!retriable || stopping()) throw err;
      if (!warned) log.warn(`${what}: waiting and retrying`, { error: (err as Error).message });
      warned = true;
      // Sleep in slices so SIGTERM during a long backoff stops the daemon promptly.
      for (let slept = 0; slept < delay && !stopping(); slept += 200) await sleep(Math.min(200, delay - slept));
      if (stopping()) throw err;
      delay = Math.min(delay * 2, 10_000);
    }
  }
}

/**
 * Lease events are handed to the backend in coalesced batches: everything
 * that arrives within this window goes in one handleEvents call (a burst of
 * 10,000 leases written one by one is a few dozen batches, not 10,000).
 */
const EVENT_COALESCE_MS = 50;

/**
 * Log lease events proportionately: the usual handful (a renewal, a host
 * joining or leaving) one line per lease, a burst one summary line per
 * batch with the per-lease lines at debug. A budget of per-lease lines
 * (LINE_BURST, refilled at LINES_PER_SECOND) decides which.
 */
const LINE_BURST = 32;
const LINES_PER_SECOND = 2;

class LeaseEventLog {
  private tokens = LINE_BURST;
  private last = Date.now();

  write(events: LeaseEvent[]): void {
    const now = Date.now();
    this.tokens = Math.min(LINE_BURST, this.tokens + ((now - this.last) / 1000) * LINES_PER_SECOND);
    this.last = now;
    const perLease = events.length <= 8 && this.tokens >= events.length;
    if (perLease) this.tokens -= events.length;
    let added = 0;
    for (const e of events) {
      if (e.type === 'added') added++;
      (perLease ? log.info : log.debug)(`lease ${e.type}`, { subnet: describe(e.lease), publicIP: e.lease.attrs.publicIP });
    }
    if (!perLease) log.info('lease events', { added, removed: events.length - added });
  }
}

function renderLeaseMetrics(s: { accepted: number; rejected: Record<string, number> }): string {
  const lines = [
    '# HELP flannel_subnet_leases Other hosts\' leases this daemon routes to.',
    '# TYPE flannel_subnet_leases gauge',
    `flannel_subnet_leases ${s.accepted}`,
    '# HELP flannel_subnet_leases_rejected_total Leases skipped because they do not fit the network config or collide with another, by reason.',
    '# TYPE flannel_subnet_leases_rejected_total counter',
  ];
  for (const [reason, n] of Object.entries(s.rejected)) lines.push(`flannel_subnet_leases_rejected_total{reason="${reason}"} ${n}`);
  return lines.join('\n') + '\n';
}

export class Daemon {
  private stopping = false;
  private backend: Backend | null = null;
  private watch: LeaseWatchHandle | null = null;
  private healthz: Server | null = null;
  private renewTimer: NodeJS.Timeout | null = null;
  private sm: SubnetManager | null = null;
  /** What /readyz answers: why the daemon is not serving yet (null once running). */
  readonly readiness = new Readiness();
  /** The masquerade/forward rules kept in place: iptables rules, or an nftables table (EnableNFTables). */
  private firewall: { teardown(): Promise<void> } | null = null;
  private eventChain: Promise<void> = Promise.resolve();
  private pendingEvents: LeaseEvent[] = [];
  private flushTimer: NodeJS.Timeout | null = null;
  private readonly eventLog = new LeaseEventLog();
  private failure: Error | null = null;
  private readonly failed: Promise<Error>;
  private fail: (err: Error) => void = () => {};
  lease: Lease | null = null;
  private readonly backends: BackendRegistry;

  /** True once stop() was called (e.g. SIGTERM while still waiting for etcd). */
  get isStopping(): boolean {
    return this.stopping;
  }

  constructor(
    private readonly opts: DaemonOptions,
    private readonly settings: DaemonSettings = {},
  ) {
    this.failed = new Promise((resolve) => (this.fail = resolve));
    this.backends = settings.backends ?? BUILTIN_BACKENDS;
  }

  /**
   * Resolves with the error when the daemon must not go on after start: a
   * backend reported that it cannot run (ctx.fatal), or our lease now
   * belongs to another host. The caller then stops the daemon and exits 1.
   */
  whenFailed(): Promise<Error> {
    return this.failed;
  }

  private failWith(err: Error, what: string): void {
    if (this.failure || this.stopping) return;
    this.failure = err;
    log.error(what, { error: err.message });
    this.fail(err);
  }

  async start(): Promise<void> {
    const opts = this.opts;
    setLogLevel(opts.logLevel as LogLevel);
    const metrics = new Metrics();
    const health = new Health();
    // Up first, so probes see a daemon that waits (for the API server, a podCIDR) as alive but not ready.
    if (opts.healthzPort > 0) {
      this.healthz = await startHealthz(opts.healthzIP, opts.healthzPort, metrics, health, this.readiness);
      log.info('healthz listening', { addr: `${opts.healthzIP}:${opts.healthzPort}` });
    }

    const sm = await this.openSubnetManager();
    this.sm = sm;
    log.info('subnet store', { store: sm.name });
    await sm.start?.();
    if (this.stopping) throw new Error('stopped while starting');

    let config: NetworkConfig;
    try {
      config = await whileUnavailable('reading the network config', () => sm.getNetworkConfig(), () => this.stopping);
    } catch (err) {
      if (err instanceof ConfigError) throw new FatalError(err.message);
      throw err;
    }
    log.info('network config', {
      backend: config.backendType,
      network: config.network ? formatIP4Net(config.network) : undefined,
      ipv6Network: config.ipv6Network ? formatIP6Net(config.ipv6Network) : undefined,
    });

    // An operator's address for this host kept in the store (Kubernetes: node-public-ip) stands in for --public-ip.
    const stored = (await sm.storedPublicIPs?.()) ?? {};
    const ifaceOpts = { ...opts, publicIP: opts.publicIP || stored.publicIP || '', publicIPv6: opts.publicIPv6 || stored.publicIPv6 || '' };
    // The families decide what the interface must have: an IPv6-only network needs no IPv4 address.
    const extIface = await selectExternalInterface(ifaceOpts, undefined, { ipv4: config.enableIPv4, ipv6: config.enableIPv6 }).catch((err: Error) => {
      throw new FatalError(err.message);
    });
    log.info('using interface', { iface: extIface.name, addr: extIface.ifaceAddr || undefined, publicIP: extIface.extAddr || undefined, publicIPv6: config.enableIPv6 ? extIface.extAddr6 : undefined, mtu: extIface.mtu });
    // PublicIP as flannel publishes it: 0.0.0.0 on an IPv6-only network (the PublicIPv6 names the host then).
    const publicIP = config.enableIPv4 ? extIface.extAddr : NO_PUBLIC_IP;
    const publicIPv6 = config.enableIPv6 ? (extIface.extAddr6 ?? null) : null;

    const factory = await this.backends.factory(config.backendType);
    const backend = await factory({
      config,
      backendConfig: config.backend,
      extIface,
      subnetManager: sm,
      log: createLogger(config.backendType),
      metrics,
      health,
      dataplane: this.settings.dataplane ?? DEFAULT_DATAPLANE_OPTIONS,
      dryRun: opts.dryRun,
      fatal: (err) => this.failWith(err, 'backend cannot run, stopping'),
    }).catch(asFatal);
    this.backend = backend;

    const previous = await readPreviousSubnets(opts.subnetFile);
    const previousLease = await whileUnavailable('looking up our previous lease', () => sm.findPreviousLease(leaseHolder({ publicIP, publicIPv6 }), previous), () => this.stopping);
    if (opts.dryRun) return this.dryRun(backend, previousLease, config);
    const backendAttrs = await backend.prepare(previousLease).catch(asFatal);
    const attrs = { publicIP, publicIPv6, ...backendAttrs };
    const lease = await whileUnavailable('acquiring a lease', () => sm.acquireLease(attrs, previous), () => this.stopping);
    this.lease = lease;

    this.readiness.set('starting the backend');
    await backend.start(lease).catch(asFatal);
    await writeSubnetEnv(opts.subnetFile, renderSubnetEnv(config, lease, backend.mtu(), opts.ipMasq));
    log.info('wrote subnet file', { path: opts.subnetFile, subnet: describe(lease), mtu: backend.mtu() });

    if (opts.ipMasq || opts.iptablesForwardRules) {
      const { installFirewall } = await import('../net/firewall.js');
      this.firewall = await installFirewall(config, lease, { ipMasq: opts.ipMasq, forwardRules: opts.iptablesForwardRules, resyncSeconds: opts.iptablesResync, log });
    }

    const watch = await sm.watchLeases(lease, config, {
      onEvents: (events) => this.enqueueEvents(events),
      onOwnLeaseRemoved: () => this.restoreOwnLease(),
      onOwnLeaseTaken: (holder) => this.leaseLost(new LeaseLostError(describe(lease), `the key now belongs to PublicIP ${holder}`)),
    });
    this.watch = watch;
    metrics.register('leases', () => renderLeaseMetrics(watch.stats()));
    // The leases listed at start go to the backend at once, not after a coalescing window:
    // "running" means the routes to every known host are in place.
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushEvents();
    await this.eventChain;
    this.scheduleRenew();
    this.readiness.set(null);
    sm.announceUp?.();
    log.info('running');
  }

  /** Kubernetes Node objects (--kube-subnet-mgr), else etcd or the embedded store under --etcd-prefix. */
  private async openSubnetManager(): Promise<SubnetManager> {
    const opts = this.opts;
    if (opts.kubeSubnetMgr) {
      const { KubeSubnetManager } = await import('../subnet/kube/manager.js');
      try {
        return new KubeSubnetManager({
          apiUrl: opts.kubeApiUrl,
          kubeconfigFile: opts.kubeconfigFile,
          annotationPrefix: opts.kubeAnnotationPrefix,
          netConfPath: opts.netConfigPath,
          setNodeNetworkUnavailable: opts.setNodeNetworkUnavailable,
          env: this.settings.env ?? process.env,
          readiness: this.readiness,
          backendTypes: this.backends.types(),
          ...(this.settings.kubeBackoffMs ? { backoffMs: this.settings.kubeBackoffMs } : {}),
        });
      } catch (err) {
        throw new FatalError((err as Error).message);
      }
    }
    const store = await openStore(opts);
    // --etcd-prefix applies to the embedded store too, so both stores share one layout.
    return new KvSubnetManager({ store, prefix: opts.etcdPrefix, ttlSeconds: this.settings.leaseTtlSeconds, backendTypes: this.backends.types() });
  }

  /**
   * --dry-run: what the backend would change for our lease and the leases
   * in the store now, printed one command a line; nothing is written (not
   * the store, not the kernel: kernel backends only record their writes).
   */
  private async dryRun(backend: Backend, own: Lease | null, config: NetworkConfig): Promise<void> {
    if (!backend.plannedCommands) throw new FatalError(`--dry-run: the ${backend.type} backend has no kernel state to plan (kernel backends: vxlan, host-gw, ipip, and wireguard's kernel path)`);
    if (!own) throw new FatalError('--dry-run: this host holds no lease in the store yet; start flanneld once, then ask again');
    await backend.prepare(own).catch(asFatal);
    await backend.start(own);
    const events: LeaseEvent[] = [];
    const watch = await this.sm!.watchLeases(own, config, { onEvents: (e) => events.push(...e) });
    await watch.close();
    await backend.handleEvents(events);
    await backend.stop();
    this.plan = backend.plannedCommands();
    log.info('dry run: nothing was changed', { commands: this.plan.length, leases: events.length });
  }

  /** The commands of a dry run (after start() returned). */
  plan: string[] = [];

  private enqueueEvents(events: LeaseEvent[]): void {
    for (const e of events) this.pendingEvents.push(e);
    if (this.flushTimer) return;
    this.flushTimer = setTimeout(() => this.flushEvents(), EVENT_COALESCE_MS);
  }

  private flushEvents(): void {
    this.flushTimer = null;
    const events = this.pendingEvents;
    this.pendingEvents = [];
    if (events.length === 0 || this.stopping) return;
    this.eventLog.write(events);
    // Serialize: a backend applies one batch at a time, in order.
    this.eventChain = this.eventChain
      .then(() => this.backend?.handleEvents(events))
      .catch((err: Error) => log.error('backend failed to apply lease events', { error: err.message }));
  }

  /** Our subnet now belongs to another host: stop and exit 1, as flannel does, so pods never share a subnet. */
  private leaseLost(err: Error): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.failWith(err, 'our lease was taken over; stopping so two hosts never use one subnet (a restart acquires a new one)');
  }

  /** Serialises writes of our own lease (renewal, restore), so each compares against the other's result. */
  private leaseWrites: Promise<void> = Promise.resolve();

  private restoreOwnLease(): void {
    this.leaseWrites = this.leaseWrites.then(async () => {
      if (this.stopping || this.failure || !this.lease || !this.sm) return;
      try {
        // The restored key carries a TTL whatever it had before (an operator's reservation
        // that was deleted comes back as an ordinary lease), so renewals follow it from now on.
        this.lease = await this.sm.restoreLease(this.lease);
        log.info('restored our lease in the store', { subnet: describe(this.lease) });
        this.scheduleRenew();
      } catch (err) {
        if (err instanceof LeaseLostError) this.leaseLost(err);
        else log.warn('cannot restore our lease yet', { error: (err as Error).message });
      }
    });
  }

  private scheduleRenew(): void {
    if (this.renewTimer) clearTimeout(this.renewTimer);
    this.renewTimer = null;
    if (this.stopping || this.failure || !this.lease) return;
    const marginMs = this.opts.subnetLeaseRenewMargin * 60_000;
    const ttlMs = (this.settings.leaseTtlSeconds ?? DEFAULT_LEASE_TTL_SECONDS) * 1000;
    // With a short test TTL the margin may exceed it; renew at half the TTL then.
    const margin = marginMs >= ttlMs ? ttlMs / 2 : marginMs;
    const due = this.lease.expiration === 0 ? null : Math.max(0, this.lease.expiration - Date.now() - margin);
    if (due === null) return; // a reservation never expires
    this.renewTimer = setTimeout(() => void this.renew(), due);
  }

  private renew(): Promise<void> {
    this.leaseWrites = this.leaseWrites.then(() => this.renewNow());
    return this.leaseWrites;
  }

  private async renewNow(): Promise<void> {
    if (this.stopping || this.failure || !this.lease || !this.sm) return;
    try {
      this.lease = await this.sm.renewLease(this.lease);
      this.scheduleRenew();
    } catch (err) {
      if (err instanceof LeaseLostError) return this.leaseLost(err);
      // flannel retries a failed renewal after a minute; with a short TTL retry sooner.
      const retry = Math.min(60_000, Math.max(1000, (this.lease.expiration - Date.now()) / 4));
      log.warn('lease renewal failed, retrying', { error: (err as Error).message, retryInMs: Math.round(retry) });
      this.renewTimer = setTimeout(() => void this.renew(), retry);
    }
  }

  async stop(): Promise<void> {
    if (this.stopping) return;
    this.stopping = true;
    if (this.renewTimer) clearTimeout(this.renewTimer);
    if (this.flushTimer) clearTimeout(this.flushTimer);
    await this.watch?.close().catch(() => {});
    await this.eventChain;
    await this.backend?.stop().catch((err: Error) => log.warn('backend stop failed', { error: err.message }));
    await this.firewall?.teardown().catch((err: Error) => log.warn('firewall rules teardown failed', { error: err.message }));
    await new Promise<void>((r) => (this.healthz ? this.healthz.close(() => r()) : r()));
    await this.sm?.close().catch(() => {});
    log.info(this.lease ? 'stopped; the lease is kept for the next start' : 'stopped before taking a lease');
  }
}
