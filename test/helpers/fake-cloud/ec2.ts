/**
 * A fake EC2 for the aws-vpc tests, speaking the protocol the real SDK
 * speaks: the EC2 Query API (POST, form-encoded Action/Version/params,
 * Signature Version 4 checked against the test's credentials) answered
 * with EC2's XML, its error document and codes (RouteAlreadyExists,
 * RequestLimitExceeded, UnauthorizedOperation, RouteLimitExceeded, ...);
 * and one instance metadata service (IMDSv2: PUT token, GET with it; v1
 * when allowed) per instance, with an instance-role credential.
 */
import { createHash, createHmac } from 'node:crypto';
import { FakeHttpServer, FakeMetadataServer, FaultPlan, type FakeReply, type FakeRequest } from './http-server.js';

export const FAKE_AWS_KEY = { accessKeyId: 'AKIAFAKEFLANNELTEST1', secretAccessKey: 'fake/secret/for/tests/only/0123456789abcd' };
const ROLE_KEY = { accessKeyId: 'ASIAFAKEROLEKEY00001', secretAccessKey: 'fake/role/secret/0123456789abcdefghij', token: 'fake-role-session-token' };

export interface FakeInstance {
  id: string;
  privateIp: string;
  eniId: string;
  mac: string;
  subnetId: string;
  sourceDestCheck: boolean;
  /** Terminated instances make their routes blackholes. */
  terminated?: boolean;
}

export interface FakeRoute {
  dest: string;
  eniId?: string;
  gatewayId?: string;
  origin: 'CreateRouteTable' | 'CreateRoute';
}

export interface FakeRouteTable {
  id: string;
  routes: FakeRoute[];
  subnetIds: string[];
  main: boolean;
}

export interface Ec2Call {
  action: string;
  params: Record<string, string>;
}

export class FakeEc2 {
  readonly region = 'us-east-1';
  readonly vpcId = 'vpc-0f1a2b3c';
  readonly vpcCidr = '172.31.0.0/16';
  readonly instances = new Map<string, FakeInstance>();
  readonly tables = new Map<string, FakeRouteTable>();
  readonly calls: Ec2Call[] = [];
  readonly faults = new FaultPlan();
  /** Actions the credentials' policy does not grant (UnauthorizedOperation). */
  readonly denied = new Set<string>();
  routeLimit = 50;
  /** The instance role is served by the metadata services only when set. */
  roleName: string | null = null;
  private readonly api = new FakeHttpServer((r) => this.serveApi(r));
  readonly metadata = new Map<string, FakeImds>();

  async start(): Promise<void> {
    await this.api.listen();
  }

  get endpoint(): string {
    return this.api.url;
  }

  async stop(): Promise<void> {
    await this.api.close();
    for (const m of this.metadata.values()) await m.close();
  }

  /** A table with the VPC's local route; main, or associated with these subnets. */
  addTable(id: string, opts: { main?: boolean; subnetIds?: string[] } = {}): FakeRouteTable {
    const t: FakeRouteTable = { id, routes: [{ dest: this.vpcCidr, gatewayId: 'local', origin: 'CreateRouteTable' }], subnetIds: opts.subnetIds ?? [], main: opts.main ?? false };
    this.tables.set(id, t);
    return t;
  }

  /** An instance and its metadata service (started). */
  async addInstance(n: number, privateIp: string, subnetId = 'subnet-0aaa1111'): Promise<{ instance: FakeInstance; imds: FakeImds }> {
    const instance = this.addInstanceRecord(n, privateIp, subnetId);
    const imds = new FakeImds(this, instance);
    await imds.listen();
    this.metadata.set(instance.id, imds);
    return { instance, imds };
  }

  /** An instance EC2 knows (DescribeInstances), without a metadata service of its own: another host of the cluster. */
  addInstanceRecord(n: number, privateIp: string, subnetId = 'subnet-0aaa1111'): FakeInstance {
    const hex = n.toString(16).padStart(2, '0');
    const instance: FakeInstance = { id: `i-0000000000000${hex.padStart(4, '0')}`, privateIp, eniId: `eni-00000000000${hex.padStart(6, '0')}`, mac: `0e:00:00:00:00:${hex.slice(-2)}`, subnetId, sourceDestCheck: true };
    this.instances.set(instance.id, instance);
    return instance;
  }

  /** Writes (not Describe*) the API was asked for since `from` calls. */
  writesSince(from: number): Ec2Call[] {
    return this.calls.slice(from).filter((c) => !c.action.startsWith('Describe'));
  }

  routesOf(tableId: string): { dest: string; target: string; state: string }[] {
    return this.tables.get(tableId)!.routes.map((r) => ({ dest: r.dest, target: r.eniId ?? r.gatewayId ?? '', state: this.stateOf(r) }));
  }

  private stateOf(r: FakeRoute): 'active' | 'blackhole' {
    if (!r.eniId) return 'active';
    const inst = [...this.instances.values()].find((i) => i.eniId === r.eniId);
    return inst && !inst.terminated ? 'active' : 'blackhole';
  }

  private serveApi(req: FakeRequest): FakeReply {
    const params = Object.fromEntries(new URLSearchParams(req.body));
    const action = params.Action ?? '';
    this.calls.push({ action, params });
    const auth = this.checkSignature(req);
    if (auth) return auth;
    if (params.Version !== '2016-11-15') return ec2Error(400, 'InvalidParameterValue', `unknown API version ${params.Version}`);
    const fault = this.faults.take(action);
    if (fault) return ec2Error(fault.status, fault.code, fault.message ?? `injected ${fault.code}`);
    if (this.denied.has(action)) return ec2Error(403, 'UnauthorizedOperation', 'You are not authorized to perform this operation.');
    switch (action) {
      case 'DescribeInstances':
        return this.describeInstances(params);
      case 'DescribeRouteTables':
        return this.describeRouteTables(params);
      case 'CreateRoute':
        return this.createRoute(params);
      case 'ReplaceRoute':
        return this.replaceRoute(params);
      case 'DeleteRoute':
        return this.deleteRoute(params);
      case 'ModifyInstanceAttribute':
        return this.modifySourceDest(params, 'InstanceId');
      case 'ModifyNetworkInterfaceAttribute':
        return this.modifySourceDest(params, 'NetworkInterfaceId');
      default:
        return ec2Error(400, 'InvalidAction', `The action ${action} is not valid for this web service.`);
    }
  }

  /** Signature Version 4, recomputed from the signed headers and the body, as EC2 checks it. */
  private checkSignature(req: FakeRequest): FakeReply | null {
    const auth = String(req.headers.authorization ?? '');
    const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/ec2\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/.exec(auth);
    if (!m) return ec2Error(401, 'AuthFailure', 'AWS was not able to validate the provided access credentials');
    const [, keyId, date, region, signedHeaders, signature] = m as unknown as string[];
    const secret = keyId === FAKE_AWS_KEY.accessKeyId ? FAKE_AWS_KEY.secretAccessKey : keyId === ROLE_KEY.accessKeyId && this.roleName ? ROLE_KEY.secretAccessKey : null;
    if (!secret) return ec2Error(401, 'AuthFailure', 'AWS was not able to validate the provided access credentials');
    if (keyId === ROLE_KEY.accessKeyId && req.headers['x-amz-security-token'] !== ROLE_KEY.token) return ec2Error(401, 'AuthFailure', 'session token missing');
    const headerLines = signedHeaders!.split(';').map((h) => `${h}:${String(req.headers[h] ?? '').trim().replace(/\s+/g, ' ')}\n`).join('');
    const payloadHash = createHash('sha256').update(req.body).digest('hex');
    const canonical = [req.method, req.url.pathname, canonicalQuery(req.url), headerLines, signedHeaders, payloadHash].join('\n');
    const amzDate = String(req.headers['x-amz-date'] ?? '');
    const scope = `${date}/${region}/ec2/aws4_request`;
    const toSign = ['AWS4-HMAC-SHA256', amzDate, scope, createHash('sha256').update(canonical).digest('hex')].join('\n');
    let k: Buffer = hmac(`AWS4${secret}`, date!);
    for (const part of [region!, 'ec2', 'aws4_request']) k = hmac(k, part);
    const expected = createHmac('sha256', k).update(toSign).digest('hex');
    if (expected !== signature) return ec2Error(403, 'SignatureDoesNotMatch', 'The request signature we calculated does not match the signature you provided.');
    return null;
  }

  private describeInstances(p: Record<string, string>): FakeReply {
    const ids = listParam(p, 'InstanceId');
    let found = [...this.instances.values()].filter((i) => ids.length === 0 || ids.includes(i.id));
    if (found.length < ids.length) return ec2Error(400, 'InvalidInstanceID.NotFound', `The instance ID '${ids.join(',')}' does not exist`);
    for (const [name, values] of filterParams(p)) {
      if (name !== 'network-interface.addresses.private-ip-address') return ec2Error(400, 'InvalidParameterValue', `The filter '${name}' is invalid`);
      found = found.filter((i) => values.includes(i.privateIp) && !i.terminated);
    }
    const items = found
      .map(
        (i) => `<item><reservationId>r-${i.id.slice(2)}</reservationId><ownerId>123456789012</ownerId><instancesSet><item>
<instanceId>${i.id}</instanceId><privateIpAddress>${i.privateIp}</privateIpAddress><subnetId>${i.subnetId}</subnetId><vpcId>${this.vpcId}</vpcId>
<sourceDestCheck>${i.sourceDestCheck}</sourceDestCheck><instanceState><code>16</code><name>running</name></instanceState>
<networkInterfaceSet><item><networkInterfaceId>${i.eniId}</networkInterfaceId><subnetId>${i.subnetId}</subnetId><vpcId>${this.vpcId}</vpcId>
<macAddress>${i.mac}</macAddress><sourceDestCheck>${i.sourceDestCheck}</sourceDestCheck><status>in-use</status>
<attachment><attachmentId>eni-attach-${i.id.slice(2)}</attachmentId><deviceIndex>0</deviceIndex><status>attached</status></attachment>
<privateIpAddressesSet><item><privateIpAddress>${i.privateIp}</privateIpAddress><primary>true</primary></item></privateIpAddressesSet>
</item></networkInterfaceSet></item></instancesSet></item>`,
      )
      .join('');
    return ec2Ok('DescribeInstancesResponse', `<reservationSet>${items}</reservationSet>`);
  }

  private describeRouteTables(p: Record<string, string>): FakeReply {
    const ids = listParam(p, 'RouteTableId');
    const filters = filterParams(p);
    let tables = [...this.tables.values()];
    if (ids.length > 0) {
      const missing = ids.find((id) => !this.tables.has(id));
      if (missing) return ec2Error(400, 'InvalidRouteTableID.NotFound', `The routeTable ID '${missing}' does not exist`);
      tables = tables.filter((t) => ids.includes(t.id));
    }
    for (const [name, values] of filters) {
      if (name === 'association.subnet-id') tables = tables.filter((t) => t.subnetIds.some((s) => values.includes(s)));
      else if (name === 'association.main') tables = tables.filter((t) => values.includes(String(t.main)));
      else if (name === 'vpc-id') tables = tables.filter(() => values.includes(this.vpcId));
      else return ec2Error(400, 'InvalidParameterValue', `The filter '${name}' is invalid`);
    }
    const body = tables
      .map((t) => {
        const routes = t.routes
          .map((r) => {
            const inst = r.eniId ? [...this.instances.values()].find((i) => i.eniId === r.eniId) : undefined;
            const target = r.gatewayId
              ? `<gatewayId>${r.gatewayId}</gatewayId>`
              : `${inst ? `<instanceId>${inst.id}</instanceId><instanceOwnerId>123456789012</instanceOwnerId>` : ''}<networkInterfaceId>${r.eniId}</networkInterfaceId>`;
            return `<item><destinationCidrBlock>${r.dest}</destinationCidrBlock>${target}<state>${this.stateOf(r)}</state><origin>${r.origin}</origin></item>`;
          })
          .join('');
        const assoc = [
          ...(t.main ? [`<item><routeTableAssociationId>rtbassoc-m${t.id.slice(4)}</routeTableAssociationId><routeTableId>${t.id}</routeTableId><main>true</main></item>`] : []),
          ...t.subnetIds.map((s) => `<item><routeTableAssociationId>rtbassoc-${s.slice(7)}</routeTableAssociationId><routeTableId>${t.id}</routeTableId><subnetId>${s}</subnetId><main>false</main></item>`),
        ].join('');
        return `<item><routeTableId>${t.id}</routeTableId><vpcId>${this.vpcId}</vpcId><ownerId>123456789012</ownerId><routeSet>${routes}</routeSet><associationSet>${assoc}</associationSet><tagSet/></item>`;
      })
      .join('');
    return ec2Ok('DescribeRouteTablesResponse', `<routeTableSet>${body}</routeTableSet>`);
  }

  private tableFor(p: Record<string, string>): FakeRouteTable | FakeReply {
    const t = this.tables.get(p.RouteTableId ?? '');
    return t ?? ec2Error(400, 'InvalidRouteTableID.NotFound', `The routeTable ID '${p.RouteTableId}' does not exist`);
  }

  private targetFor(p: Record<string, string>): string | FakeReply {
    const eni = p.NetworkInterfaceId ?? [...this.instances.values()].find((i) => i.id === p.InstanceId)?.eniId;
    if (!eni) return ec2Error(400, 'InvalidParameterCombination', 'No route target specified');
    if (![...this.instances.values()].some((i) => i.eniId === eni)) return ec2Error(400, 'InvalidNetworkInterfaceID.NotFound', `The networkInterface ID '${eni}' does not exist`);
    return eni;
  }

  private createRoute(p: Record<string, string>): FakeReply {
    const t = this.tableFor(p);
    if ('status' in t) return t;
    const eni = this.targetFor(p);
    if (typeof eni !== 'string') return eni;
    if (t.routes.some((r) => r.dest === p.DestinationCidrBlock)) return ec2Error(400, 'RouteAlreadyExists', `The route identified by ${p.DestinationCidrBlock} already exists.`);
    if (t.routes.length >= this.routeLimit) return ec2Error(400, 'RouteLimitExceeded', `The maximum number of routes has been reached for route table ${t.id}.`);
    t.routes.push({ dest: p.DestinationCidrBlock!, eniId: eni, origin: 'CreateRoute' });
    return ec2Ok('CreateRouteResponse', '<return>true</return>');
  }

  private replaceRoute(p: Record<string, string>): FakeReply {
    const t = this.tableFor(p);
    if ('status' in t) return t;
    const eni = this.targetFor(p);
    if (typeof eni !== 'string') return eni;
    const r = t.routes.find((x) => x.dest === p.DestinationCidrBlock);
    if (!r) return ec2Error(400, 'InvalidRoute.NotFound', `no route with destination-cidr-block ${p.DestinationCidrBlock} in route table ${t.id}`);
    r.eniId = eni;
    delete r.gatewayId;
    return ec2Ok('ReplaceRouteResponse', '<return>true</return>');
  }

  private deleteRoute(p: Record<string, string>): FakeReply {
    const t = this.tableFor(p);
    if ('status' in t) return t;
    const i = t.routes.findIndex((x) => x.dest === p.DestinationCidrBlock);
    if (i < 0) return ec2Error(400, 'InvalidRoute.NotFound', `no route with destination-cidr-block ${p.DestinationCidrBlock} in route table ${t.id}`);
    t.routes.splice(i, 1);
    return ec2Ok('DeleteRouteResponse', '<return>true</return>');
  }

  private modifySourceDest(p: Record<string, string>, by: 'InstanceId' | 'NetworkInterfaceId'): FakeReply {
    const inst = [...this.instances.values()].find((i) => (by === 'InstanceId' ? i.id : i.eniId) === p[by]);
    if (!inst) return ec2Error(400, by === 'InstanceId' ? 'InvalidInstanceID.NotFound' : 'InvalidNetworkInterfaceID.NotFound', `${p[by]} does not exist`);
    const v = p['SourceDestCheck.Value'];
    if (v !== 'true' && v !== 'false') return ec2Error(400, 'InvalidParameterValue', 'SourceDestCheck.Value must be true or false');
    inst.sourceDestCheck = v === 'true';
    return ec2Ok(`${p.Action}Response`, '<return>true</return>');
  }

  roleCredentials(): typeof ROLE_KEY {
    return ROLE_KEY;
  }
}

/** One instance's metadata service (IMDS). */
export class FakeImds extends FakeMetadataServer {
  readonly tokens = new Set<string>();
  /** false: IMDSv1 GETs without a token are refused (401), as on instances that require v2. */
  allowV1 = true;
  /** false: the token endpoint answers 403 (IMDSv2 switched off, v1 only). */
  allowV2 = true;

  constructor(
    private readonly ec2: FakeEc2,
    private readonly instance: FakeInstance,
  ) {
    super();
  }

  protected override recordAs(req: FakeRequest): string {
    return `${req.method} ${req.url.pathname}`;
  }

  protected answer(req: FakeRequest): FakeReply {
    const path = req.url.pathname;
    if (path === '/latest/api/token') {
      if (req.method !== 'PUT') return { status: 405, body: '' };
      if (!this.allowV2) return { status: 403, body: '' };
      const ttl = Number(req.headers['x-aws-ec2-metadata-token-ttl-seconds']);
      if (!(ttl >= 1 && ttl <= 21600)) return { status: 400, body: '' };
      const token = `tok-${this.tokens.size + 1}-${this.instance.id}`;
      this.tokens.add(token);
      return { status: 200, body: token };
    }
    const token = req.headers['x-aws-ec2-metadata-token'];
    if (token !== undefined ? !this.tokens.has(String(token)) : !this.allowV1) return { status: 401, body: '' };
    const i = this.instance;
    const md = '/latest/meta-data/';
    if (!path.startsWith(md)) return { status: 404, body: '' };
    const rest = path.slice(md.length);
    const macBase = `network/interfaces/macs/${i.mac}/`;
    const role = this.ec2.roleName;
    const creds = this.ec2.roleCredentials();
    const table: Record<string, string> = {
      'instance-id': i.id,
      'placement/region': this.ec2.region,
      'placement/availability-zone': `${this.ec2.region}a`,
      'local-ipv4': i.privateIp,
      mac: i.mac,
      'network/interfaces/macs/': `${i.mac}/`,
      [`${macBase}local-ipv4s`]: i.privateIp,
      [`${macBase}interface-id`]: i.eniId,
      [`${macBase}subnet-id`]: i.subnetId,
      [`${macBase}vpc-id`]: this.ec2.vpcId,
    };
    if (role) {
      table['iam/security-credentials/'] = role;
      table[`iam/security-credentials/${role}`] = JSON.stringify({
        Code: 'Success',
        Type: 'AWS-HMAC',
        AccessKeyId: creds.accessKeyId,
        SecretAccessKey: creds.secretAccessKey,
        Token: creds.token,
        Expiration: new Date(Date.now() + 6 * 3600_000).toISOString(),
        LastUpdated: new Date().toISOString(),
      });
    }
    const body = table[rest];
    return body === undefined ? { status: 404, body: '' } : { status: 200, body };
  }
}

function hmac(key: string | Buffer, data: string): Buffer {
  return createHmac('sha256', key).update(data).digest();
}

function canonicalQuery(url: URL): string {
  return [...url.searchParams].map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(v)}`).sort().join('&');
}

/** Values of a list parameter: Name.1, Name.2, ... */
function listParam(p: Record<string, string>, name: string): string[] {
  const out: string[] = [];
  for (let i = 1; p[`${name}.${i}`] !== undefined; i++) out.push(p[`${name}.${i}`]!);
  return out;
}

function filterParams(p: Record<string, string>): [string, string[]][] {
  const out: [string, string[]][] = [];
  for (let i = 1; p[`Filter.${i}.Name`] !== undefined; i++) out.push([p[`Filter.${i}.Name`]!, listParam(p, `Filter.${i}.Value`)]);
  return out;
}

function ec2Ok(root: string, inner: string): FakeReply {
  return { status: 200, headers: { 'content-type': 'text/xml;charset=UTF-8' }, body: `<?xml version="1.0" encoding="UTF-8"?>\n<${root} xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>${requestId()}</requestId>${inner}</${root}>` };
}

function ec2Error(status: number, code: string, message: string): FakeReply {
  return {
    status,
    headers: { 'content-type': 'text/xml;charset=UTF-8' },
    body: `<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>${code}</Code><Message>${message}</Message></Error></Errors><RequestID>${requestId()}</RequestID></Response>`,
  };
}

let requests = 0;
function requestId(): string {
  return `00000000-0000-4000-8000-${(++requests).toString(16).padStart(12, '0')}`;
}
