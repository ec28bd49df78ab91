/**
 * The Kubernetes subnet manager (--kube-subnet-mgr): leases are Node
 * objects, as in flannel. A node's spec.podCIDR(s) is its subnet, chosen
 * by the cluster (kube-controller-manager), not by us; our lease is our own
 * node's annotations, written through the nodes/status subresource with a
 * strategic merge patch of only the changed keys; other leases are the
 * nodes carrying `kube-subnet-manager: "true"`. Nothing expires, so there
 * is nothing to renew. The daemon, the backends and subnet.env do not know
 * which SubnetManager they run on.
 *
 * Where flannel exits or stalls, this one waits and says why (log and
 * /readyz): for the API server, for RBAC permissions (checked at start,
 * each missing one named), for our node and its podCIDR. Other nodes go
 * through the same LeaseSet checks as etcd leases (inside Network, one
 * prefix length, no overlap with ours or each other), after their
 * annotations were decoded strictly (node-lease.ts).
 */
import { readFile } from 'node:fs/promises';
import { createLogger, type Logger } from '../../log.js';
import { ConfigError, parseNetworkConfig, type NetworkConfig } from '../../config/network.js';
import { formatIP4Net, formatIP6Net, ip4NetContainsNet, ip6NetContains } from '../../net/ipaddr.js';
import type { Readiness, WaitingFor } from '../../metrics/readiness.js';
import { LeaseDecodeError } from '../lease-codec.js';
import { LeaseSet, leaseSetChanges, sameLease } from '../lease-set.js';
import type { Lease, LeaseAttrs, LeaseEvent, LeaseWatchCallbacks, LeaseWatchHandle, SubnetManager } from '../types.js';
import { annotationKeys, type AnnotationKeys } from './annotations.js';
import { KubeApiError, KubeClient, KubeUnreachableError } from './client.js';
import { resolveKubeConnection } from './kube-config.js';
import { leaseKeyOf, nodeToLease, ownAnnotationChanges, podSubnets, slimNode, type SlimNode } from './node-lease.js';
import { NodeWatch } from './node-watch.js';
import { missingPermissions, requiredPermissions } from './rbac.js';

export interface KubeSubnetManagerOptions {
  apiUrl: string;
  kubeconfigFile: string;
  annotationPrefix: string;
  netConfPath: string;
  setNodeNetworkUnavailable: boolean;
  /** NODE_NAME, POD_NAME, POD_NAMESPACE, KUBERNETES_SERVICE_HOST/PORT. */
  env: NodeJS.ProcessEnv;
  readiness?: Readiness;
  log?: Logger;
  backendTypes?: Iterable<string>;
  /** Initial and maximum backoff while waiting (tests shorten it). */
  backoffMs?: { initial: number; max: number };
  /** A client made elsewhere (tests); default: from the flags and environment. */
  client?: KubeClient;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class KubeSubnetManager implements SubnetManager {
  readonly name: string;
  private readonly client: KubeClient;
  private readonly keys: AnnotationKeys;
  private readonly log: Logger;
  private readonly backoff: { initial: number; max: number };
  private nodeName = '';
  private watch: NodeWatch | null = null;
  private config: NetworkConfig | null = null;
  private closed = false;
  /** What we publish (kept to re-publish when the operator's annotations change). */
  private ownAttrs: LeaseAttrs | null = null;
  /** The addresses node-public-ip(v6) held at start (they chose the interface). */
  private startedWith: { publicIP?: string; publicIPv6?: string } = {};
  private ownPatching: Promise<void> = Promise.resolve();
  private leaseWatch: { onListed(): void; onChanged(names: Set<string>): void } | null = null;
  private waitingFor: WaitingFor | null = null;

  constructor(private readonly opts: KubeSubnetManagerOptions) {
    this.keys = annotationKeys(opts.annotationPrefix);
    this.log = opts.log ?? createLogger('kube');
    this.backoff = opts.backoffMs ?? { initial: 1000, max: 30_000 };
    this.client =
      opts.client ??
      new KubeClient(
        resolveKubeConnection({
          apiUrl: opts.apiUrl,
          kubeconfigFile: opts.kubeconfigFile,
          env: opts.env,
          // Several nodes simulated on one machine each need their own ServiceAccount files.
          serviceAccountDir: opts.env.FLANNEL_KUBE_SERVICE_ACCOUNT_DIR || undefined,
        }),
      );
    this.name = `Kubernetes API ${this.client.conn.server} (${this.client.conn.source})`;
  }

  private wait(why: WaitingFor | null): void {
    this.waitingFor = why;
    this.opts.readiness?.set(why);
  }

  /**
   * Retry `fn` while the API server is unreachable or refuses us, with
   * backoff; one warning per kind of trouble, one info line when it works.
   */
  private async retrying<T>(what: string, why: WaitingFor, fn: () => Promise<T>): Promise<T> {
    let delay = this.backoff.initial;
    let warned = '';
    for (;;) {
      try {
        const v = await fn();
        if (warned) this.log.info(`${what}: done after retrying`);
        return v;
      } catch (err) {
        if (this.closed) throw err;
        if (!(err instanceof KubeUnreachableError || err instanceof KubeApiError)) throw err;
        const tag = err instanceof KubeApiError ? `${err.status}` : 'unreachable';
        if (warned !== tag) this.log.warn(`${what}: ${err instanceof KubeApiError && (err.status === 401 || err.status === 403) ? 'refused' : 'API server unreachable'}, retrying`, { error: err.message, retryInMs: delay });
        warned = tag;
        this.wait(why);
        await sleep(delay);
        delay = Math.min(delay * 2, this.backoff.max);
      }
    }
  }

  /** Find our node's name, check our permissions, list and watch nodes; waits (with backoff) until all of that works. */
  async start(): Promise<void> {
    this.log.info('Kubernetes subnet manager', { server: this.client.conn.server, via: this.client.conn.source, annotationPrefix: this.opts.annotationPrefix });
    this.nodeName = await this.resolveNodeName();
    await this.checkPermissions();
    this.wait('waiting for the API server');
    this.watch = new NodeWatch(
      this.client,
      (o) => slimNode(o, this.keys),
      {
        onListed: () => this.leaseWatch?.onListed(),
        onChanged: (names) => {
          if (names.has(this.nodeName)) this.ownNodeChanged();
          this.leaseWatch?.onChanged(names);
        },
        onTrouble: (problem) => {
          // Only while starting: a running daemon keeps its routes and stays ready through an outage.
          if (this.waitingFor !== null && problem !== null) this.wait('waiting for the API server');
        },
      },
      this.log,
      { initial: this.backoff.initial, max: Math.min(this.backoff.max, 10_000) },
      new Set(Object.values(this.keys)),
    );
    await this.watch.start();
    if (this.closed) return;
    this.log.info('node list synced', { nodes: this.watch.nodes.size, node: this.nodeName });
  }

  private async resolveNodeName(): Promise<string> {
    const env = this.opts.env;
    if (env.NODE_NAME) return env.NODE_NAME;
    const pod = env.POD_NAME;
    const ns = env.POD_NAMESPACE;
    if (!pod || !ns) throw new ConfigError('NODE_NAME', '--kube-subnet-mgr needs NODE_NAME, or POD_NAME and POD_NAMESPACE (the manifest sets them from the downward API)');
    const obj = await this.retrying(`reading pod ${ns}/${pod}`, 'waiting for the API server', () =>
      this.client.request<{ spec?: { nodeName?: string } }>('GET', `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(pod)}`),
    );
    const name = obj.spec?.nodeName;
    if (!name) throw new ConfigError('POD_NAME', `pod ${ns}/${pod} has no spec.nodeName (is it scheduled?)`);
    return name;
  }

  /** SelfSubjectAccessReview of every verb flanneld uses; waits, naming each missing one, until all are granted. */
  private async checkPermissions(): Promise<void> {
    const needed = requiredPermissions(this.nodeName, !this.opts.env.NODE_NAME, this.opts.env.POD_NAMESPACE);
    let delay = this.backoff.initial;
    let logged = '';
    for (;;) {
      const missing = await this.retrying('checking RBAC permissions', 'waiting for the API server', () => missingPermissions(this.client, needed));
      if (missing.length === 0) {
        if (logged) this.log.info('RBAC permissions granted now');
        return;
      }
      const text = missing.map((p) => p.describe).join('; ');
      if (text !== logged) {
        for (const p of missing) this.log.error(`RBAC: this ServiceAccount may not ${p.describe}: grant it in the ClusterRole (deploy/kube-flannel.yml has flannel's)`);
      }
      logged = text;
      this.wait('waiting for RBAC permissions');
      if (this.closed) throw new Error('stopped');
      await sleep(delay);
      delay = Math.min(delay * 2, this.backoff.max);
    }
  }

  private ownNode(): SlimNode | undefined {
    return this.watch?.nodes.get(this.nodeName);
  }

  /** Our node as the watch knows it; waits for it to exist. */
  private async waitOwnNode(): Promise<SlimNode> {
    let warned = false;
    for (let delay = this.backoff.initial; ; delay = Math.min(delay * 2, this.backoff.max)) {
      const n = this.ownNode();
      if (n) return n;
      if (this.closed) throw new Error('stopped');
      if (!warned) this.log.warn('this node is not in the API server yet, waiting', { node: this.nodeName });
      warned = true;
      this.wait('waiting for this node in the API server');
      await sleep(Math.min(delay, 2000));
    }
  }

  async getNetworkConfig(): Promise<NetworkConfig> {
    if (this.config) return this.config;
    let text: string;
    try {
      text = await readFile(this.opts.netConfPath, 'utf8');
    } catch (err) {
      throw new ConfigError('--net-config-path', `cannot read ${this.opts.netConfPath}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message} (the manifest mounts ConfigMap kube-flannel-cfg there)`);
    }
    this.config = parseNetworkConfig(text, { backendTypes: this.opts.backendTypes });
    return this.config;
  }

  /** The operator's node-public-ip(v6) annotations: the addresses whose interface flanneld uses. */
  async storedPublicIPs(): Promise<{ publicIP?: string; publicIPv6?: string }> {
    const n = await this.waitOwnNode();
    const out: { publicIP?: string; publicIPv6?: string } = {};
    const v4 = n.annotations[this.keys.nodePublicIP];
    const v6 = n.annotations[this.keys.nodePublicIPv6];
    if (v4) out.publicIP = v4;
    if (v6) out.publicIPv6 = v6;
    this.startedWith = { ...out };
    if (v4 || v6) this.log.info('using the public address from the node annotation', { annotation: v4 ? this.keys.nodePublicIP : this.keys.nodePublicIPv6, address: v4 ?? v6 });
    return out;
  }

  /** Our node's earlier lease (its annotations), so vxlan keeps its VtepMAC across restarts. */
  async findPreviousLease(): Promise<Lease | null> {
    const n = await this.waitOwnNode();
    const cfg = await this.getNetworkConfig();
    try {
      return nodeToLease(n, this.keys, cfg);
    } catch (err) {
      if (err instanceof LeaseDecodeError) return null;
      throw err;
    }
  }

  async acquireLease(attrs: LeaseAttrs): Promise<Lease> {
    const cfg = await this.getNetworkConfig();
    const node = await this.waitForPodCIDR();
    const { subnet, ipv6Subnet } = podSubnets(node);
    if (cfg.enableIPv4) {
      if (!subnet) throw new ConfigError('Network', `node ${this.nodeName} has no IPv4 podCIDR (${node.podCIDRs.join(', ')}) while EnableIPv4 is set`);
      if (!cfg.network || !ip4NetContainsNet(cfg.network, subnet)) {
        throw new ConfigError(
          'Network',
          `node ${this.nodeName}'s podCIDR ${formatIP4Net(subnet)} is outside Network ${cfg.network ? formatIP4Net(cfg.network) : '(none)'}: set Network in net-conf.json (ConfigMap kube-flannel-cfg) to the cluster's pod CIDR (kube-controller-manager --cluster-cidr)`,
        );
      }
    }
    if (cfg.enableIPv6) {
      if (!ipv6Subnet) throw new ConfigError('IPv6Network', `node ${this.nodeName} has no IPv6 podCIDR (${node.podCIDRs.join(', ')}) while EnableIPv6 is set`);
      if (!cfg.ipv6Network || ipv6Subnet.prefixLen < cfg.ipv6Network.prefixLen || !ip6NetContains(cfg.ipv6Network, ipv6Subnet.ip)) {
        throw new ConfigError(
          'IPv6Network',
          `node ${this.nodeName}'s IPv6 podCIDR ${formatIP6Net(ipv6Subnet)} is outside IPv6Network ${cfg.ipv6Network ? formatIP6Net(cfg.ipv6Network) : '(none)'}: set IPv6Network in net-conf.json to the cluster's IPv6 pod CIDR`,
        );
      }
    }
    this.ownAttrs = attrs;
    await this.publishOwn('publishing this node\'s lease annotations');
    return { subnet: cfg.enableIPv4 ? subnet : null, ipv6Subnet: cfg.enableIPv6 ? ipv6Subnet : null, attrs, expiration: 0, key: leaseKeyOf(this.nodeName) };
  }

  private async waitForPodCIDR(): Promise<SlimNode> {
    let warned = false;
    for (let delay = this.backoff.initial; ; delay = Math.min(delay * 2, 5000)) {
      const n = await this.waitOwnNode();
      if (n.podCIDRs.length > 0) {
        if (warned) this.log.info('this node has a podCIDR now', { node: this.nodeName, podCIDRs: n.podCIDRs.join(',') });
        return n;
      }
      if (this.closed) throw new Error('stopped');
      if (!warned) {
        this.log.warn("this node has no podCIDR yet, waiting (kube-controller-manager assigns it with --allocate-node-cidrs; or set spec.podCIDR)", { node: this.nodeName });
      }
      warned = true;
      this.wait("waiting for this node's podCIDR");
      await sleep(delay);
    }
  }

  /** Patch our node's annotations that differ from what we publish (nothing when none differ). */
  private async publishOwn(what: string): Promise<void> {
    const attrs = this.ownAttrs;
    if (!attrs) return;
    await this.retrying(what, 'waiting for the API server', async () => {
      const node = this.ownNode();
      if (!node) return;
      const changes = ownAnnotationChanges(node, this.keys, attrs, this.startedWith);
      if (Object.keys(changes).length === 0) return;
      const patched = await this.client.request<Record<string, unknown>>(
        'PATCH',
        `/api/v1/nodes/${encodeURIComponent(this.nodeName)}/status`,
        { metadata: { annotations: changes } },
        'application/strategic-merge-patch+json',
      );
      // The reply is the node as stored: take it now rather than waiting for the watch to echo it.
      const slim = slimNode(patched, this.keys);
      if (slim && this.watch) this.watch.nodes.set(slim.name, slim);
      this.log.info('node annotations written', { node: this.nodeName, annotations: Object.keys(changes).join(',') });
    });
  }

  /** Our node changed: the operator may have set or changed an address annotation; publish what follows from it. */
  private ownNodeChanged(): void {
    if (!this.ownAttrs || this.closed) return;
    const node = this.ownNode();
    if (!node) {
      this.log.warn('this node was deleted from the API server; routes stay until this daemon stops', { node: this.nodeName });
      return;
    }
    if (Object.keys(ownAnnotationChanges(node, this.keys, this.ownAttrs, this.startedWith)).length === 0) return;
    this.ownPatching = this.ownPatching.then(() => this.publishOwn('following a change of this node\'s address annotations')).catch((err: Error) => this.log.warn('cannot update node annotations', { error: err.message }));
  }

  /** subnet.env is written and the backend runs: mark the node's network available (retried until it lands). */
  announceUp(): void {
    this.wait(null);
    if (!this.opts.setNodeNetworkUnavailable) {
      this.log.info('not setting NetworkUnavailable (--set-node-network-unavailable=false)');
      return;
    }
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const condition = { type: 'NetworkUnavailable', status: 'False', reason: 'FlannelIsUp', message: 'Flannel is running on this node', lastTransitionTime: now, lastHeartbeatTime: now };
    void (async () => {
      let delay = this.backoff.initial;
      for (let attempt = 1; !this.closed; attempt++) {
        try {
          await this.client.request('PATCH', `/api/v1/nodes/${encodeURIComponent(this.nodeName)}/status`, { status: { conditions: [condition] } }, 'application/strategic-merge-patch+json');
          this.log.info('set NetworkUnavailable=False', { node: this.nodeName, attempts: attempt });
          return;
        } catch (err) {
          if (attempt === 1 || attempt % 10 === 0) this.log.warn('cannot set NetworkUnavailable=False yet, retrying', { node: this.nodeName, error: (err as Error).message });
          await sleep(delay);
          delay = Math.min(delay * 2, this.backoff.max);
        }
      }
    })();
  }

  /** Nothing expires in Kubernetes mode. */
  async renewLease(lease: Lease): Promise<Lease> {
    return lease;
  }

  async restoreLease(lease: Lease): Promise<Lease> {
    return lease;
  }

  async watchLeases(own: Lease, config: NetworkConfig, callbacks: LeaseWatchCallbacks): Promise<LeaseWatchHandle> {
    const watch = this.watch;
    if (!watch) throw new Error('KubeSubnetManager.watchLeases before start');
    // Every node's podCIDR has the cluster's one mask size (--node-cidr-mask-size): ours says which.
    const cfg: NetworkConfig = {
      ...config,
      subnetLen: own.subnet?.prefixLen ?? config.subnetLen,
      ipv6SubnetLen: own.ipv6Subnet?.prefixLen ?? config.ipv6SubnetLen,
    };
    const log = this.log;
    let set = new LeaseSet(cfg, own, log);
    let closed = false;
    const loggedMalformed = new Map<string, string>();
    const emit = (out: LeaseEvent[]) => {
      if (out.length > 0 && !closed) callbacks.onEvents(out);
    };
    /** One node into `target`: a lease, a refusal, or (not a flannel node / deleted) nothing. */
    const apply = (target: LeaseSet, name: string, out: LeaseEvent[]) => {
      if (name === this.nodeName) return;
      const key = leaseKeyOf(name);
      const node = watch.nodes.get(name);
      if (!node) return target.delete(key, out, sameLease);
      try {
        const lease = nodeToLease(node, this.keys, config);
        if (!lease) return target.delete(key, out, sameLease);
        target.put(lease, out, sameLease);
      } catch (err) {
        if (!(err instanceof LeaseDecodeError)) throw err;
        const tag = `${err.reason}:${err.message}`;
        if (loggedMalformed.get(key) !== tag) log.warn('skipping node', { lease: key, reason: err.reason, error: err.message });
        loggedMalformed.set(key, tag);
        target.rejectMalformed(key, err, out, sameLease);
      }
    };
    /** A full listing: rebuild the set (oldest node first, as collisions would have resolved) and send the difference. */
    const reconcile = () => {
      const fresh = new LeaseSet(cfg, own, log, set);
      const ignore: LeaseEvent[] = [];
      const names = [...watch.nodes.values()].sort((a, b) => a.created - b.created).map((n) => n.name);
      for (const name of names) apply(fresh, name, ignore);
      const out = leaseSetChanges(set, fresh);
      set = fresh;
      emit(out);
    };
    this.leaseWatch = {
      onListed: reconcile,
      onChanged: (names) => {
        const out: LeaseEvent[] = [];
        for (const name of names) apply(set, name, out);
        emit(out);
      },
    };
    reconcile();
    return {
      close: async () => {
        closed = true;
        this.leaseWatch = null;
      },
      stats: () => ({ accepted: set.accepted.size, rejected: { ...set.rejectedTotal } }),
    };
  }

  async close(): Promise<void> {
    this.closed = true;
    this.watch?.stop();
    await this.ownPatching;
    this.client.close();
  }
}
