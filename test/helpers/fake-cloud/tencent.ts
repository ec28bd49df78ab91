/**
 * A fake Tencent Cloud VPC API for the tencent-vpc tests, as the SDK
 * speaks it: POST / with a JSON body, the action and version in X-TC-*
 * headers, and TC3-HMAC-SHA256 in Authorization: the canonical request
 * (method, path, query, content-type and host, the body's SHA-256), the
 * credential scope (date/service/tc3_request) and the signature are
 * checked here with the test's secret, so a wrong secret fails as in the
 * cloud; answers as {"Response":{...,"RequestId"}} and Tencent's error
 * shape. One metadata service per instance.
 */
import { createHash, createHmac } from 'node:crypto';
import { FakeHttpServer, FakeMetadataServer, FaultPlan, type FakeReply, type FakeRequest } from './http-server.js';

export const FAKE_TC_KEY = { id: 'AKIDfakeFlannelTencentTest0000000001', secret: 'fakeTencentSecretForTestsOnly0123' };

export interface FakeTcRoute {
  RouteId: number;
  DestinationCidrBlock: string;
  GatewayType: string;
  GatewayId: string;
  RouteType: 'USER' | 'LOCAL' | 'CCN' | 'NETD';
  Enabled: boolean;
  RouteDescription: string;
}

export class FakeTencent {
  readonly region = 'ap-guangzhou';
  readonly vpcId = 'vpc-fakeflnl';
  readonly tableId = 'rtb-fakeflnl';
  readonly routes: FakeTcRoute[] = [];
  readonly calls: { action: string; body: Record<string, unknown> }[] = [];
  readonly faults = new FaultPlan();
  routeLimit = 200;
  private nextId = 1;
  private readonly api = new FakeHttpServer((r) => this.serve(r));
  readonly metadata = new Map<string, FakeTcMetadata>();

  async start(): Promise<void> {
    await this.api.listen();
    this.reset();
  }

  reset(): void {
    this.routes.length = 0;
    this.routes.push({ RouteId: 0, DestinationCidrBlock: '172.16.0.0/16', GatewayType: 'LOCAL', GatewayId: 'Local', RouteType: 'LOCAL', Enabled: true, RouteDescription: '' });
  }

  get endpoint(): string {
    return this.api.url;
  }

  async stop(): Promise<void> {
    await this.api.close();
    for (const m of this.metadata.values()) await m.close();
  }

  async addInstance(privateIp: string, mac: string): Promise<FakeTcMetadata> {
    const md = new FakeTcMetadata(this.region, this.vpcId, mac);
    await md.listen();
    this.metadata.set(privateIp, md);
    return md;
  }

  /** USER routes as {dest, gateway, enabled}. */
  userRoutes(): { dest: string; gateway: string; enabled: boolean }[] {
    return this.routes.filter((r) => r.RouteType === 'USER').map((r) => ({ dest: r.DestinationCidrBlock, gateway: r.GatewayId, enabled: r.Enabled }));
  }

  writesSince(from: number): string[] {
    return this.calls.slice(from).map((c) => c.action).filter((a) => !a.startsWith('Describe'));
  }

  /** A route made beforehand: by a person (no description), or described as a flannel-ts daemon describes its routes. */
  addRoute(dest: string, gateway: string, o: { description?: string; enabled?: boolean } = {}): void {
    this.routes.push({ RouteId: 1000 + this.nextId++, DestinationCidrBlock: dest, GatewayType: 'NORMAL_CVM', GatewayId: gateway, RouteType: 'USER', Enabled: o.enabled ?? true, RouteDescription: o.description ?? '' });
  }

  private serve(req: FakeRequest): FakeReply {
    const action = String(req.headers['x-tc-action'] ?? '');
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(req.body || '{}') as Record<string, unknown>;
    } catch {
      return tcError('InvalidParameter', 'The request body is not JSON.');
    }
    this.calls.push({ action, body });
    const bad = this.verify(req);
    if (bad) return bad;
    const fault = this.faults.take(action);
    if (fault) return tcError(fault.code, fault.message ?? `injected ${fault.code}`);
    switch (action) {
      case 'DescribeRouteTables':
        return this.describe(body);
      case 'CreateRoutes':
        return this.create(body);
      case 'DeleteRoutes':
        return this.remove(body);
      default:
        return tcError('InvalidAction', `The action ${action} is not found.`);
    }
  }

  /** Tencent's gateway checks: version, region, timestamp, key, and the TC3-HMAC-SHA256 signature. */
  private verify(req: FakeRequest): FakeReply | null {
    const h = req.headers;
    if (req.method !== 'POST') return tcError('InvalidParameter', 'Only POST is used here.');
    if (h['x-tc-version'] !== '2017-03-12') return tcError('InvalidParameterValue', 'The version is not valid.');
    if (h['x-tc-region'] !== this.region) return tcError('InvalidParameterValue.Region', `The region ${String(h['x-tc-region'])} is not valid.`);
    const ts = Number(h['x-tc-timestamp']);
    if (!(Math.abs(ts * 1000 - Date.now()) < 5 * 60_000)) return tcError('AuthFailure.SignatureExpire', 'The signature has expired.');
    const auth = String(h.authorization ?? '');
    const m = /^TC3-HMAC-SHA256 Credential=([^/]+)\/(\d{4}-\d{2}-\d{2})\/([a-z0-9]+)\/tc3_request, SignedHeaders=([a-z;-]+), Signature=([0-9a-f]{64})$/.exec(auth);
    if (!m) return tcError('AuthFailure.SignatureFailure', 'The Authorization header is malformed.');
    const [, id, date, service, signedHeaders, signature] = m;
    if (id !== FAKE_TC_KEY.id) return tcError('AuthFailure.SecretIdNotFound', 'The SecretId is not found.');
    if (date !== new Date(ts * 1000).toISOString().slice(0, 10)) return tcError('AuthFailure.SignatureFailure', 'The credential date does not match the timestamp.');
    // The service is the endpoint's first label (the SDK's rule), so it is checked against the Host the request went to.
    const hostname = String(h.host ?? '').replace(/:\d+$/, '');
    if (service !== hostname.split('.')[0]) return tcError('AuthFailure.SignatureFailure', 'The credential scope does not name this service.');
    if (signedHeaders !== 'content-type;host') return tcError('AuthFailure.SignatureFailure', 'Content-Type and Host must be signed.');
    const canonical = ['POST', req.url.pathname, req.url.search.slice(1), `content-type:${String(h['content-type'])}\nhost:${hostname}\n`, signedHeaders, sha256hex(req.body)].join('\n');
    const toSign = ['TC3-HMAC-SHA256', String(ts), `${date}/${service}/tc3_request`, sha256hex(canonical)].join('\n');
    const kDate = hmac(`TC3${FAKE_TC_KEY.secret}`, date!);
    const kService = hmac(kDate, service!);
    const kSigning = hmac(kService, 'tc3_request');
    const expected = createHmac('sha256', kSigning).update(toSign).digest('hex');
    if (expected !== signature) return tcError('AuthFailure.SignatureFailure', 'The provided credentials could not be validated.');
    return null;
  }

  private describe(b: Record<string, unknown>): FakeReply {
    const filters = (b.Filters as { Name: string; Values: string[] }[] | undefined) ?? [];
    const ids = b.RouteTableIds as string[] | undefined;
    const vpcFilter = filters.find((f) => f.Name === 'vpc-id');
    const match = (!vpcFilter || vpcFilter.Values.includes(this.vpcId)) && (!ids || ids.includes(this.tableId));
    const set = match ? [{ VpcId: this.vpcId, RouteTableId: this.tableId, RouteTableName: 'default', Main: true, RouteSet: this.routes.map((r) => ({ ...r, RouteTableId: this.tableId })) }] : [];
    return ok({ TotalCount: set.length, RouteTableSet: set });
  }

  private create(b: Record<string, unknown>): FakeReply {
    if (b.RouteTableId !== this.tableId) return tcError('ResourceNotFound', 'The route table does not exist.');
    const routes = (b.Routes as Partial<FakeTcRoute>[]) ?? [];
    for (const r of routes) {
      if (r.GatewayType !== 'NORMAL_CVM' || !this.metadata.has(r.GatewayId ?? '')) return tcError('InvalidParameterValue', `The gateway ${String(r.GatewayId)} is not a CVM of this VPC.`);
      if (this.routes.some((x) => x.DestinationCidrBlock === r.DestinationCidrBlock && x.RouteType === 'USER')) return tcError('InvalidParameterValue.Duplicate', 'The route already exists.');
    }
    if (this.routes.filter((x) => x.RouteType === 'USER').length + routes.length > this.routeLimit) return tcError('LimitExceeded', 'The route table is full.');
    const created: FakeTcRoute[] = [];
    for (const r of routes) {
      const route: FakeTcRoute = { RouteId: this.nextId++, DestinationCidrBlock: r.DestinationCidrBlock!, GatewayType: 'NORMAL_CVM', GatewayId: r.GatewayId!, RouteType: 'USER', Enabled: true, RouteDescription: r.RouteDescription ?? '' };
      this.routes.push(route);
      created.push(route);
    }
    return ok({ TotalCount: created.length, RouteTableSet: [{ RouteTableId: this.tableId, RouteSet: created }] });
  }

  private remove(b: Record<string, unknown>): FakeReply {
    if (b.RouteTableId !== this.tableId) return tcError('ResourceNotFound', 'The route table does not exist.');
    for (const r of (b.Routes as { RouteId?: number }[]) ?? []) {
      const i = this.routes.findIndex((x) => x.RouteId === r.RouteId);
      if (i < 0) return tcError('ResourceNotFound', `The route ${String(r.RouteId)} does not exist.`);
      if (this.routes[i]!.RouteType !== 'USER') return tcError('UnsupportedOperation', 'System routes cannot be deleted.');
      this.routes.splice(i, 1);
    }
    return ok({});
  }
}

/** One instance's metadata service (metadata.tencentyun.com in the cloud). */
export class FakeTcMetadata extends FakeMetadataServer {
  constructor(
    private readonly region: string,
    private readonly vpcId: string,
    private readonly mac: string,
  ) {
    super();
  }

  protected answer(req: FakeRequest): FakeReply {
    const values: Record<string, string> = {
      '/latest/meta-data/placement/region': this.region,
      '/latest/meta-data/mac': this.mac,
      [`/latest/meta-data/network/interfaces/macs/${this.mac}/vpc-id`]: this.vpcId,
    };
    const v = values[req.url.pathname];
    return v === undefined ? { status: 404, body: '' } : { status: 200, body: v };
  }
}

const sha256hex = (s: string) => createHash('sha256').update(s).digest('hex');
const hmac = (key: string | Buffer, msg: string) => createHmac('sha256', key).update(msg).digest();

let requests = 0;
function ok(body: Record<string, unknown>): FakeReply {
  return { status: 200, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ Response: { ...body, RequestId: `fake-${++requests}` } }) };
}

/** Tencent answers errors with HTTP 200 and Response.Error. */
function tcError(code: string, message: string): FakeReply {
  return { status: 200, headers: { 'content-type': 'application/json' }, body: JSON.stringify({ Response: { Error: { Code: code, Message: message }, RequestId: `fake-${++requests}` } }) };
}
