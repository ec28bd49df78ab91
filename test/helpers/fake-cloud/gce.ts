/**
 * A fake Compute Engine for the gce tests: the v1 REST JSON API that
 * @googleapis/compute calls (projects, networks, instances, global routes,
 * global operations that finish a little later, Google's error JSON),
 * bearer tokens checked against the ones the metadata servers handed out,
 * and one metadata server per instance (Metadata-Flavor: Google both ways).
 */
import { FakeHttpServer, FakeMetadataServer, FaultPlan, type FakeReply, type FakeRequest } from './http-server.js';

export interface FakeGceInstance {
  name: string;
  zone: string;
  networkIP: string;
  canIpForward: boolean;
  /** No service account: the token endpoint answers 404. */
  noServiceAccount?: boolean;
}

export interface FakeGceRoute {
  name: string;
  destRange: string;
  network: string;
  nextHopInstance?: string;
  nextHopGateway?: string;
  priority: number;
}

interface Operation {
  name: string;
  operationType: 'insert' | 'delete';
  targetLink: string;
  doneAt: number;
  apply: () => { code: string; message: string } | null;
  error?: { code: string; message: string } | null;
  status: 'RUNNING' | 'DONE';
}

export class FakeGce {
  readonly project = 'flannel-test-project';
  readonly network = 'default';
  readonly routes = new Map<string, FakeGceRoute>();
  readonly instances = new Map<string, FakeGceInstance>();
  readonly calls: { method: string; path: string }[] = [];
  readonly faults = new FaultPlan();
  readonly tokens = new Set<string>();
  routeQuota = 100;
  /** What projects.get says the quota is, when it differs from what inserts enforce. */
  reportedQuota: number | null = null;
  /** Every token is refused (a revoked service account, a wrong key file). */
  rejectTokens = false;
  /** How long an operation stays RUNNING. */
  operationMs = 150;
  private readonly operations = new Map<string, Operation>();
  private readonly api = new FakeHttpServer((r) => this.serve(r));
  readonly metadata = new Map<string, FakeGceMetadata>();

  async start(): Promise<void> {
    await this.api.listen();
    this.routes.clear();
    this.addDefaultRoute();
  }

  addDefaultRoute(): void {
    this.routes.set('default-route-internet', { name: 'default-route-internet', destRange: '0.0.0.0/0', network: this.networkLink(), nextHopGateway: `${this.base}/global/gateways/default-internet-gateway`, priority: 1000 });
  }

  get endpoint(): string {
    return this.api.url;
  }

  private get base(): string {
    return `${this.api.url}/compute/v1/projects/${this.project}`;
  }

  networkLink(): string {
    return `${this.base}/global/networks/${this.network}`;
  }

  instanceLink(name: string): string {
    const i = this.instances.get(name)!;
    return `${this.base}/zones/${i.zone}/instances/${name}`;
  }

  async stop(): Promise<void> {
    await this.api.close();
    for (const m of this.metadata.values()) await m.close();
  }

  async addInstance(name: string, networkIP: string): Promise<FakeGceMetadata> {
    this.instances.set(name, { name, zone: 'us-central1-a', networkIP, canIpForward: true });
    const md = new FakeGceMetadata(this, this.instances.get(name)!);
    await md.listen();
    this.metadata.set(name, md);
    return md;
  }

  /** Writes (POST/DELETE, not operation waits) since `from` calls. */
  writesSince(from: number): { method: string; path: string }[] {
    return this.calls.slice(from).filter((c) => (c.method === 'POST' || c.method === 'DELETE') && !c.path.includes('/operations/'));
  }

  routeList(): { name: string; dest: string; nextHop: string }[] {
    return [...this.routes.values()].map((r) => ({ name: r.name, dest: r.destRange, nextHop: (r.nextHopInstance ?? r.nextHopGateway ?? '').replace(/.*\/instances\//, 'instance:').replace(/.*\/gateways\//, 'gateway:') }));
  }

  private serve(req: FakeRequest): FakeReply | Promise<FakeReply> {
    const path = req.url.pathname;
    this.calls.push({ method: req.method, path });
    const token = /^Bearer (.+)$/.exec(String(req.headers.authorization ?? ''))?.[1];
    if (!token || !this.tokens.has(token) || this.rejectTokens) return gceError(401, 'Request had invalid authentication credentials. Expected OAuth 2 access token.', 'UNAUTHENTICATED', 'authError');
    const m = /^\/compute\/v1\/projects\/([^/]+)(\/.*)?$/.exec(path);
    if (!m || m[1] !== this.project) return gceError(404, `The resource 'projects/${m?.[1]}' was not found`, 'NOT_FOUND', 'notFound');
    const rest = m[2] ?? '';
    const action = `${req.method} ${rest.replace(/\/[^/]+$/, '/*')}`;
    const fault = this.faults.take(action) ?? this.faults.take(req.method);
    if (fault) return gceError(fault.status, fault.message ?? `injected ${fault.code}`, fault.status === 429 ? 'RESOURCE_EXHAUSTED' : 'PERMISSION_DENIED', fault.code);
    if (req.method === 'GET' && rest === '') {
      const usage = this.routes.size;
      return json({ kind: 'compute#project', name: this.project, quotas: [{ metric: 'ROUTES', limit: this.reportedQuota ?? this.routeQuota, usage }, { metric: 'NETWORKS', limit: 15, usage: 1 }] });
    }
    let g: RegExpExecArray | null;
    if (req.method === 'GET' && (g = /^\/global\/networks\/([^/]+)$/.exec(rest))) {
      if (g[1] !== this.network) return gceError(404, `The resource 'projects/${this.project}/global/networks/${g[1]}' was not found`, 'NOT_FOUND', 'notFound');
      return json({ kind: 'compute#network', name: this.network, selfLink: this.networkLink() });
    }
    if (req.method === 'GET' && (g = /^\/zones\/([^/]+)\/instances\/([^/]+)$/.exec(rest))) {
      const inst = this.instances.get(g[2]!);
      if (!inst || inst.zone !== g[1]) return gceError(404, `The resource 'projects/${this.project}/zones/${g[1]}/instances/${g[2]}' was not found`, 'NOT_FOUND', 'notFound');
      return json({ kind: 'compute#instance', name: inst.name, canIpForward: inst.canIpForward, selfLink: this.instanceLink(inst.name), networkInterfaces: [{ network: this.networkLink(), networkIP: inst.networkIP }] });
    }
    if (req.method === 'GET' && rest === '/global/routes') return this.listRoutes(req.url);
    if (req.method === 'POST' && rest === '/global/routes') return this.insertRoute(req.body);
    if (req.method === 'DELETE' && (g = /^\/global\/routes\/([^/]+)$/.exec(rest))) return this.deleteRoute(g[1]!);
    if ((g = /^\/global\/operations\/([^/]+)(\/wait)?$/.exec(rest))) return this.operation(g[1]!, Boolean(g[2]));
    return gceError(404, `no such method ${req.method} ${rest}`, 'NOT_FOUND', 'notFound');
  }

  private listRoutes(url: URL): FakeReply {
    const all = [...this.routes.values()].sort((a, b) => a.name.localeCompare(b.name));
    const max = Math.min(Number(url.searchParams.get('maxResults') ?? 500), 500);
    const start = Number(url.searchParams.get('pageToken') ?? 0);
    const page = all.slice(start, start + max).map((r) => ({
      kind: 'compute#route',
      ...r,
      selfLink: `${this.base}/global/routes/${r.name}`,
      ...(r.nextHopInstance && !this.instances.has(r.nextHopInstance.replace(/.*\//, '')) ? { warnings: [{ code: 'NEXT_HOP_INSTANCE_NOT_FOUND', message: 'Next hop instance does not exist.' }] } : {}),
    }));
    return json({ kind: 'compute#routeList', items: page, ...(start + max < all.length ? { nextPageToken: String(start + max) } : {}) });
  }

  private insertRoute(body: string): FakeReply {
    let r: Partial<FakeGceRoute>;
    try {
      r = JSON.parse(body);
    } catch {
      return gceError(400, 'Invalid JSON payload received.', 'INVALID_ARGUMENT', 'parseError');
    }
    if (!r.name || !/^[a-z]([-a-z0-9]*[a-z0-9])?$/.test(r.name) || !r.destRange || !r.network) return gceError(400, `Invalid value for field 'resource.name': '${r.name}'`, 'INVALID_ARGUMENT', 'invalid');
    const name = r.name;
    return this.newOperation('insert', `${this.base}/global/routes/${name}`, () => {
      if (this.routes.has(name)) return { code: 'ALREADY_EXISTS', message: `The resource 'projects/${this.project}/global/routes/${name}' already exists` };
      if (this.routes.size >= this.routeQuota) return { code: 'QUOTA_EXCEEDED', message: `Quota 'ROUTES' exceeded.  Limit: ${this.routeQuota} globally.` };
      this.routes.set(name, { name, destRange: r.destRange!, network: r.network!, nextHopInstance: r.nextHopInstance, priority: r.priority ?? 1000 });
      return null;
    });
  }

  private deleteRoute(name: string): FakeReply {
    if (!this.routes.has(name)) return gceError(404, `The resource 'projects/${this.project}/global/routes/${name}' was not found`, 'NOT_FOUND', 'notFound');
    return this.newOperation('delete', `${this.base}/global/routes/${name}`, () => {
      this.routes.delete(name);
      return null;
    });
  }

  private newOperation(type: 'insert' | 'delete', targetLink: string, apply: Operation['apply']): FakeReply {
    const op: Operation = { name: `operation-${Date.now()}-${this.operations.size + 1}`, operationType: type, targetLink, doneAt: Date.now() + this.operationMs, apply, status: 'RUNNING' };
    this.operations.set(op.name, op);
    return json(this.render(op));
  }

  private async operation(name: string, wait: boolean): Promise<FakeReply> {
    const op = this.operations.get(name);
    if (!op) return gceError(404, `The resource 'projects/${this.project}/global/operations/${name}' was not found`, 'NOT_FOUND', 'notFound');
    if (wait && op.status !== 'DONE') await new Promise((r) => setTimeout(r, Math.max(0, op.doneAt - Date.now())));
    if (op.status !== 'DONE' && Date.now() >= op.doneAt) {
      op.error = op.apply();
      op.status = 'DONE';
    }
    return json(this.render(op));
  }

  private render(op: Operation) {
    return {
      kind: 'compute#operation',
      name: op.name,
      operationType: op.operationType,
      targetLink: op.targetLink,
      status: op.status,
      selfLink: `${this.base}/global/operations/${op.name}`,
      ...(op.error ? { error: { errors: [op.error] }, httpErrorStatusCode: op.error.code === 'QUOTA_EXCEEDED' ? 403 : 409 } : {}),
    };
  }
}

export class FakeGceMetadata extends FakeMetadataServer {
  constructor(
    private readonly gce: FakeGce,
    private readonly instance: FakeGceInstance,
  ) {
    super();
  }

  protected answer(req: FakeRequest): FakeReply {
    const path = req.url.pathname;
    if (req.headers['metadata-flavor'] !== 'Google') return { status: 403, body: 'Missing Metadata-Flavor:Google header.' };
    const i = this.instance;
    const base = '/computeMetadata/v1/';
    const values: Record<string, string> = {
      'project/project-id': this.gce.project,
      'project/numeric-project-id': '123456789012',
      'instance/zone': `projects/123456789012/zones/${i.zone}`,
      'instance/name': i.name,
      'instance/hostname': `${i.name}.${i.zone}.c.${this.gce.project}.internal`,
      'instance/network-interfaces/0/network': `projects/123456789012/networks/${this.gce.network}`,
      'instance/network-interfaces/0/ip': i.networkIP,
    };
    const rest = path.startsWith(base) ? path.slice(base.length) : '';
    if (rest === 'instance/service-accounts/default/token') {
      if (i.noServiceAccount) return { status: 404, body: 'not found', headers: { 'Metadata-Flavor': 'Google' } };
      const token = `ya29.fake-${i.name}-${this.gce.tokens.size + 1}`;
      this.gce.tokens.add(token);
      return { status: 200, headers: { 'Metadata-Flavor': 'Google', 'content-type': 'application/json' }, body: JSON.stringify({ access_token: token, expires_in: 3599, token_type: 'Bearer' }) };
    }
    const v = values[rest];
    return v === undefined ? { status: 404, body: 'not found', headers: { 'Metadata-Flavor': 'Google' } } : { status: 200, body: v, headers: { 'Metadata-Flavor': 'Google' } };
  }
}

function json(body: unknown): FakeReply {
  return { status: 200, headers: { 'content-type': 'application/json; charset=UTF-8' }, body: JSON.stringify(body) };
}

function gceError(status: number, message: string, statusName: string, reason: string): FakeReply {
  return {
    status,
    headers: { 'content-type': 'application/json; charset=UTF-8' },
    body: JSON.stringify({ error: { code: status, message, errors: [{ message, domain: 'global', reason }], status: statusName } }),
  };
}
