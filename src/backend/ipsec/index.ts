/**
 * flannel's ipsec backend: strongSwan's charon negotiates IKEv2 with one
 * pre-shared key, ESP carries the pods' traffic in tunnel mode between the
 * hosts' PublicIPs, and flanneld installs flannel's three xfrm policies per
 * remote host through the kernel-state applier. No device and no routes of
 * ours: traffic to a remote subnet follows the host's routes and the out
 * policy sends it through the tunnel.
 *
 * Where the kernel has no ESP, strongSwan's userspace ESP (libipsec) does
 * the encryption instead (see esp-mode.ts); then charon holds the policies
 * and routes (table 220 via its TUN device) and ours are removed.
 */
import type { Backend, BackendContext, BackendFactory } from '../types.js';
import type { Lease, LeaseEvent } from '../../subnet/types.js';
import { formatIP4Net } from '../../net/ipaddr.js';
import { IpRoute } from '../../net/iproute.js';
import { KernelStateApplier } from '../../net/kernel-state.js';
import { RouteNetwork } from '../route-network.js';
import { kernelRunners, readerFor } from '../kernel-routing.js';
import { CharonDaemon, findCharon } from './charon.js';
import { connectionName, policiesFor, tunnelEnd, type TunnelEnd } from './connection.js';
import { chooseEspMode } from './esp-mode.js';
import { IkeConnections } from './ike-connections.js';
import { FLANNEL_REQID, ipsecHostSettings, parseIpsecOptions, type EspMode, type IpsecHostSettings, type IpsecOptions } from './options.js';

/** New outer IPv4 header 20, SPI 4, sequence 4, IV 16, padding up to 15, pad length 1, next header 1, ICV 16 (flannel's figure). */
export const IPSEC_OVERHEAD = 77;
/** UDP encapsulation of ESP (NAT traversal, and always with libipsec). */
export const UDP_ENCAP_OVERHEAD = 8;

export interface IpsecBackendOptions {
  ip?: IpRoute;
  recheckMs?: number;
  /** How often charon's SAs are read for /metrics, the state log and the CHILD_SA retry (default 5 s). */
  saRefreshMs?: number;
  restartDelayMs?: number;
}

/** How long an IKE SA may stay without a CHILD_SA before it is asked for again, and between two asks. */
const CHILD_RETRY_MS = 5000;

/** strongSwan's libipsec TUN device: userspace ESP reads what is routed into it. */
export const LIBIPSEC_DEVICE = 'ipsec0';

/** Whether the kernel SA install failure reason means "no ESP in this kernel". */
const NO_KERNEL_ESP = /Function not implemented|Requested type not found|Protocol not supported/i;

export class IpsecBackend implements Backend {
  readonly type = 'ipsec';
  private readonly log;
  private readonly ip: IpRoute;
  private readonly applier: KernelStateApplier;
  private readonly network: RouteNetwork<TunnelEnd>;
  private charon: CharonDaemon | null = null;
  private conns: IkeConnections | null = null;
  private esp: EspMode = 'kernel';
  private own: TunnelEnd | null = null;
  private saTimer: NodeJS.Timeout | null = null;
  private saInstallFailures = 0;
  private readonly reportedFailures = new Set<string>();
  /** Per connection: since when its IKE SA carries no CHILD_SA, and when we last asked for one. */
  private readonly childless = new Map<string, { since: number; asked: number }>();

  constructor(
    private readonly ctx: BackendContext,
    private readonly options: IpsecOptions,
    private readonly host: IpsecHostSettings & { charonPath: string },
    private readonly tuning: IpsecBackendOptions = {},
  ) {
    if (!ctx.config.network) throw new Error('ipsec backend: IPv6-only networks are not supported (flannel installs IPv4 policies)');
    this.log = ctx.log;
    const runners = kernelRunners(false, { ip: tuning.ip });
    this.ip = runners.ip;
    this.applier = new KernelStateApplier({
      scope: { network: ctx.config.network, routeDevs: [LIBIPSEC_DEVICE], ownedDevs: [], xfrmReqid: FLANNEL_REQID },
      readIp: runners.readIp,
      readBridge: readerFor(runners.bridge, 'bridge'),
      writeIp: runners.ip,
      writeBridge: runners.bridge,
      log: this.log,
    });
    this.network = new RouteNetwork<TunnelEnd>({
      backendType: 'ipsec',
      routeFor: (l) => this.peerFor(l),
      apply: (peers, recheck) => this.reconcile(peers, recheck),
      log: this.log,
      recheckMs: tuning.recheckMs,
    });
    ctx.metrics.register('ipsec', () => this.renderMetrics());
  }

  /** Start charon and check the ESP proposal with it: a host that cannot do IPsec stops here, before it holds a lease. */
  async prepare() {
    this.esp = await chooseEspMode(this.host.esp, this.host.charonPath, this.ip, this.log);
    this.log.info('ipsec config', { udpEncap: this.options.udpEncap, espProposal: this.options.espProposal, esp: this.esp });
    const charon = new CharonDaemon({
      executable: this.host.charonPath,
      runDir: this.host.runDir,
      esp: this.esp,
      log: this.log,
      health: this.ctx.health,
      restartDelayMs: this.tuning.restartDelayMs,
      events: {
        onStarted: async () => {
          this.conns?.forget();
          await this.network.reapply('charon restarted', true);
        },
        onSaInstallFailed: (conn, reason) => this.saInstallFailed(conn, reason),
      },
    });
    this.charon = charon;
    await charon.start();
    this.conns = new IkeConnections(this.options, this.esp, () => charon.client(), this.log);
    await this.conns.checkProposal({ publicIP: this.ctx.extIface.extAddr, subnet: formatIP4Net(this.ctx.config.network!) });
    return { backendType: 'ipsec' };
  }

  mtu(): number {
    const encap = this.options.udpEncap || this.esp === 'userspace';
    return this.ctx.extIface.mtu - IPSEC_OVERHEAD - (encap ? UDP_ENCAP_OVERHEAD : 0);
  }

  async start(ownLease: Lease): Promise<void> {
    this.own = tunnelEnd(ownLease);
    // Our own key at once (flannel does the same), so a peer that starts first can authenticate us.
    // Policies wait for the leases listed at start: an empty round now would remove a restarted daemon's only to put them back.
    if (this.own) await this.conns?.loadSharedKey(this.own.publicIP);
    this.network.start();
    const every = this.tuning.saRefreshMs ?? 5_000;
    this.saTimer = setInterval(() => void this.refreshSas(), every);
    this.saTimer.unref();
  }

  handleEvents(events: LeaseEvent[]): Promise<void> {
    return this.network.handleEvents(events);
  }

  async stop(): Promise<void> {
    this.network.stop();
    if (this.saTimer) clearInterval(this.saTimer);
    this.saTimer = null;
    await this.charon?.stop();
  }

  /** Read charon's SAs now (also every saRefreshMs). */
  async refreshSas(): Promise<void> {
    if (!this.conns || !this.charon?.running) return;
    try {
      await this.conns.refreshSas();
    } catch (err) {
      this.log.warn('cannot list SAs from charon', { error: (err as Error).message });
      return;
    }
    await this.retryChildless();
  }

  /**
   * A peer whose IKE SA is up without a CHILD_SA for a while gets its
   * CHILD_SA asked for again (at most every CHILD_RETRY_MS), unless the
   * kernel refused to install one: then trying again changes nothing.
   */
  private async retryChildless(): Promise<void> {
    const own = this.own;
    if (!own || !this.conns) return;
    const now = Date.now();
    const sas = this.conns.peerSas();
    for (const peer of this.network.desired().values()) {
      const name = connectionName(own, peer);
      const sa = sas.get(name);
      if (!sa || sa.ike !== 'ESTABLISHED' || sa.children.includes('INSTALLED') || this.reportedFailures.has(name)) {
        this.childless.delete(name);
        continue;
      }
      const state = this.childless.get(name) ?? { since: now, asked: 0 };
      this.childless.set(name, state);
      if (now - state.since < CHILD_RETRY_MS || now - state.asked < CHILD_RETRY_MS) continue;
      state.asked = now;
      this.log.info('IKE SA without CHILD_SA: asking charon for it again', { connection: name });
      await this.conns.initiateChild(own, peer).catch((err: Error) => this.log.warn('cannot initiate the CHILD_SA', { connection: name, error: err.message }));
    }
  }

  private peerFor(l: Lease): TunnelEnd | null {
    const end = tunnelEnd(l);
    if (!end || end.subnet === this.own?.subnet) return null;
    return end;
  }

  /**
   * Kernel state first, then charon's keys and connections. Kernel ESP:
   * flannel's three policies per peer. Userspace ESP: a route per peer's
   * subnet into ipsec0 (libipsec keeps its own policies), and none of our
   * kernel policies may stay (they would hold packets for SAs that never come).
   */
  private async reconcile(peers: ReadonlyMap<string, TunnelEnd>, recheck: boolean): Promise<void> {
    const own = this.own;
    if (!own || !this.conns) return;
    const kernel = this.esp === 'kernel';
    // Each entry names its lease: the applier reports a refused one against it and applies the rest.
    const policies = kernel ? [...peers].flatMap(([origin, p]) => policiesFor(own, p).map((x) => ({ ...x, origin }))) : [];
    const routes = kernel ? [] : [...peers].map(([origin, p]) => ({ dst: p.subnet, dev: LIBIPSEC_DEVICE, origin }));
    const r = await this.applier.apply({ routes, neighs: [], fdb: [], policies }, { reread: recheck });
    if (r.lines.length > 0) this.log.info(kernel ? 'xfrm policies updated' : 'routes into ipsec0 updated', { changes: r.lines.length, failed: r.failures.length });
    if (!this.charon?.running) return;
    const changes = await this.conns.apply(own, peers.values());
    if (changes > 0) this.log.info('charon configuration updated', { changes, connections: this.conns.connectionCount });
  }

  private saInstallFailed(conn: string | null, reason: string | null): void {
    this.saInstallFailures++;
    const key = conn ?? '?';
    if (this.reportedFailures.has(key)) return;
    this.reportedFailures.add(key);
    const noEsp = reason !== null && NO_KERNEL_ESP.test(reason);
    this.log.error('charon negotiated an IPsec SA but the kernel refused to install it: no traffic to this peer', {
      connection: conn ?? 'unknown',
      reason: reason ?? 'see the charon lines above',
      hint: noEsp ? 'the kernel has no ESP support (esp4 / CONFIG_INET_ESP); FLANNEL_IPSEC_ESP=userspace uses strongSwan userspace ESP instead' : 'check `ip xfrm state` and charon\'s lines above',
    });
  }

  private renderMetrics(): string {
    const counts = this.conns?.counts() ?? { ike: new Map(), child: new Map() };
    const lines = [
      '# HELP flannel_ipsec_charon_up 1 while charon answers on its VICI socket.',
      '# TYPE flannel_ipsec_charon_up gauge',
      `flannel_ipsec_charon_up ${this.charon?.running ? 1 : 0}`,
      '# HELP flannel_ipsec_charon_restarts_total Times charon died and was started again.',
      '# TYPE flannel_ipsec_charon_restarts_total counter',
      `flannel_ipsec_charon_restarts_total ${this.charon?.restarts ?? 0}`,
      '# HELP flannel_ipsec_connections IKE connections loaded into charon (one per remote lease).',
      '# TYPE flannel_ipsec_connections gauge',
      `flannel_ipsec_connections ${this.conns?.connectionCount ?? 0}`,
      '# HELP flannel_ipsec_ike_sas IKE SAs by state, as charon listed them at the last look.',
      '# TYPE flannel_ipsec_ike_sas gauge',
      ...[...counts.ike].map(([state, n]) => `flannel_ipsec_ike_sas{state="${state}"} ${n}`),
      '# HELP flannel_ipsec_child_sas CHILD_SAs by state, as charon listed them at the last look.',
      '# TYPE flannel_ipsec_child_sas gauge',
      ...[...counts.child].map(([state, n]) => `flannel_ipsec_child_sas{state="${state}"} ${n}`),
      '# HELP flannel_ipsec_sa_install_failures_total SAs charon negotiated but could not install in the kernel.',
      '# TYPE flannel_ipsec_sa_install_failures_total counter',
      `flannel_ipsec_sa_install_failures_total ${this.saInstallFailures}`,
    ];
    return lines.join('\n') + '\n';
  }
}

export const createIpsecBackend: BackendFactory = async (ctx: BackendContext) => {
  const options = parseIpsecOptions(ctx.backendConfig);
  const host = ipsecHostSettings();
  const charonPath = await findCharon(host.charonPath);
  return new IpsecBackend(ctx, options, { ...host, charonPath });
};
