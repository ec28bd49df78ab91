/**
 * A fake Aliyun VPC API for the ali-vpc tests: RPC style as @alicloud/pop-core
 * speaks it (GET /?Action=...&Version=2016-04-28, common parameters, the
 * HMAC-SHA1 signature over the sorted, percent-encoded query, verified here
 * with the test's secret so a wrong secret fails as in the cloud, nonces
 * not reusable), JSON answers and Aliyun's error JSON; route entries that
 * are Pending for a while before Available; one metadata service per instance.
 */
import { createHmac } from 'node:crypto';
import { FakeHttpServer, FakeMetadataServer, FaultPlan, type FakeReply, type FakeRequest } from './http-server.js';

export const FAKE_ALI_KEY = { id: 'LTAI5tFakeFlannelTest01', secret: 'fakeAliyunSecretForTestsOnly0123' };

export interface FakeEcs {
  instanceId: string;
  privateIp: string;
}

export interface FakeRouteEntry {
  id: string;
  dest: string;
  type: 'System' | 'Custom';
  nextHopType: string;
  nextHopId: string;
  status: 'Pending' | 'Available' | 'Deleting';
  name?: string;
  /** When a Pending entry becomes Available, a Deleting one disappears. */
  settlesAt: number;
}

export class FakeAliyun {
  readonly region = 'cn-hangzhou';
  readonly vpcId = 'vpc-bp1fakeflannel0001';
  readonly vRouterId = 'vrt-bp1fakeflannel0001';
  readonly tableId = 'vtb-bp1fakeflannel0001';
  readonly entries: FakeRouteEntry[] = [];
  readonly instances = new Map<string, FakeEcs>();
  readonly calls: { action: string; params: Record<string, string> }[] = [];
  readonly faults = new FaultPlan();
  entryLimit = 50;
  /** How long entries stay Pending / Deleting. */
  settleMs = 150;
  private readonly nonces = new Set<string>();
  private nextEntry = 1;
  private readonly api = new FakeHttpServer((r) => this.serve(r));
  readonly metadata = new Map<string, FakeAliMetadata>();

  async start(): Promise<void> {
    await this.api.listen();
    this.reset();
  }

  reset(): void {
    this.entries.length = 0;
    this.entries.push({ id: 'rte-system-1', dest: '192.168.0.0/16', type: 'System', nextHopType: 'local', nextHopId: '', status: 'Available', settlesAt: 0 });
    this.entries.push({ id: 'rte-system-2', dest: '100.64.0.0/10', type: 'System', nextHopType: 'service', nextHopId: '', status: 'Available', settlesAt: 0 });
  }

  get endpoint(): string {
    return this.api.url;
  }

  async stop(): Promise<void> {
    await this.api.close();
    for (const m of this.metadata.values()) await m.close();
  }

  async addInstance(instanceId: string, privateIp: string): Promise<FakeAliMetadata> {
    this.instances.set(instanceId, { instanceId, privateIp });
    const md = new FakeAliMetadata(this.region, this.vpcId, { instanceId, privateIp });
    await md.listen();
    this.metadata.set(instanceId, md);
    return md;
  }

  /** Custom entries as {dest, nextHop, status}. */
  customEntries(): { dest: string; nextHop: string; status: string }[] {
    this.settle();
    return this.entries.filter((e) => e.type === 'Custom').map((e) => ({ dest: e.dest, nextHop: e.nextHopId, status: e.status }));
  }

  writesSince(from: number): string[] {
    return this.calls.slice(from).map((c) => c.action).filter((a) => !a.startsWith('Describe'));
  }

  /** A custom entry made beforehand: by a person (no name), or named as a flannel daemon names its entries. */
  addEntry(dest: string, nextHopId: string, name?: string): void {
    this.entries.push({ id: `rte-pre-${this.nextEntry++}`, dest, type: 'Custom', nextHopType: 'Instance', nextHopId, status: 'Available', settlesAt: 0, ...(name ? { name } : {}) });
  }

  private settle(): void {
    const now = Date.now();
    for (let i = this.entries.length - 1; i >= 0; i--) {
      const e = this.entries[i]!;
      if (e.settlesAt > now) continue;
      if (e.status === 'Pending') e.status = 'Available';
      else if (e.status === 'Deleting') this.entries.splice(i, 1);
    }
  }

  private serve(req: FakeRequest): FakeReply {
    const params = Object.fromEntries(req.url.searchParams);
    const action = params.Action ?? '';
    this.calls.push({ action, params });
    const bad = this.verify(req.method, params);
    if (bad) return bad;
    const fault = this.faults.take(action);
    if (fault) return aliError(fault.status, fault.code, fault.message ?? `injected ${fault.code}`);
    this.settle();
    switch (action) {
      case 'DescribeVpcs':
        if (params.VpcId !== this.vpcId || params.RegionId !== this.region) return ok({ Vpcs: { Vpc: [] }, TotalCount: 0 });
        return ok({ Vpcs: { Vpc: [{ VpcId: this.vpcId, VRouterId: this.vRouterId, RegionId: this.region, CidrBlock: '192.168.0.0/16', Status: 'Available' }] }, TotalCount: 1, PageNumber: 1, PageSize: 10 });
      case 'DescribeVRouters':
        if (params.VRouterId !== this.vRouterId) return ok({ VRouters: { VRouter: [] }, TotalCount: 0 });
        return ok({ VRouters: { VRouter: [{ VRouterId: this.vRouterId, VpcId: this.vpcId, RegionId: this.region, RouteTableIds: { RouteTableId: [this.tableId] } }] }, TotalCount: 1 });
      case 'DescribeRouteEntryList':
        return this.describeEntries(params);
      case 'CreateRouteEntry':
        return this.createEntry(params);
      case 'DeleteRouteEntry':
        return this.deleteEntry(params);
      default:
        return aliError(404, 'InvalidAction.NotFound', `Specified api is not found, please check your url and method.`);
    }
  }

  /** The checks Aliyun's gateway makes before any action: parameters, timestamp, nonce, key and signature. */
  private verify(method: string, p: Record<string, string>): FakeReply | null {
    for (const name of ['Format', 'Version', 'AccessKeyId', 'SignatureMethod', 'Timestamp', 'SignatureVersion', 'SignatureNonce', 'Signature']) {
      if (!p[name]) return aliError(400, `MissingParameter`, `The input parameter "${name}" that is mandatory for processing this request is not supplied.`);
    }
    if (p.Version !== '2016-04-28') return aliError(400, 'InvalidVersion', `Specified parameter Version is not valid.`);
    if (p.SignatureMethod !== 'HMAC-SHA1' || p.SignatureVersion !== '1.0') return aliError(400, 'InvalidSignatureMethod', 'Specified signature method is not valid.');
    const skew = Math.abs(Date.parse(p.Timestamp!) - Date.now());
    if (!(skew < 15 * 60_000)) return aliError(400, 'InvalidTimeStamp.Expired', 'Specified time stamp or date value is expired.');
    if (p.AccessKeyId !== FAKE_ALI_KEY.id) return aliError(404, 'InvalidAccessKeyId.NotFound', 'Specified access key is not found.');
    const { Signature, ...rest } = p;
    const canonical = Object.keys(rest)
      .sort()
      .map((k) => `${percent(k)}=${percent(rest[k]!)}`)
      .join('&');
    const expected = createHmac('sha1', `${FAKE_ALI_KEY.secret}&`).update(`${method}&${percent('/')}&${percent(canonical)}`).digest('base64');
    if (expected !== Signature) return aliError(400, 'SignatureDoesNotMatch', 'Specified signature is not matched with our calculation.');
    if (this.nonces.has(p.SignatureNonce!)) return aliError(400, 'SignatureNonceUsed', 'Specified signature nonce was used already.');
    this.nonces.add(p.SignatureNonce!);
    return null;
  }

  private describeEntries(p: Record<string, string>): FakeReply {
    if (p.RouteTableId !== this.tableId) return aliError(400, 'InvalidRouteTableId.NotFound', 'Specified route table does not exist.');
    let list = this.entries;
    if (p.DestinationCidrBlock) list = list.filter((e) => e.dest === p.DestinationCidrBlock);
    const max = Math.min(Number(p.MaxResult ?? 10), 100);
    const start = Number(p.NextToken ?? 0);
    const page = list.slice(start, start + max).map((e) => ({
      RouteEntryId: e.id,
      RouteEntryName: e.name ?? '',
      RouteTableId: this.tableId,
      DestinationCidrBlock: e.dest,
      Type: e.type,
      Status: e.status,
      IpVersion: 'ipv4',
      NextHops: { NextHop: [{ NextHopType: e.nextHopType, NextHopId: e.nextHopId, Enabled: 1, Weight: 0 }] },
    }));
    return ok({ RouteEntrys: { RouteEntry: page }, MaxResult: String(max), ...(start + max < list.length ? { NextToken: String(start + max) } : { NextToken: '' }) });
  }

  private createEntry(p: Record<string, string>): FakeReply {
    if (p.RouteTableId !== this.tableId) return aliError(400, 'InvalidRouteTableId.NotFound', 'Specified route table does not exist.');
    if (p.NextHopType !== 'Instance' || !this.instances.has(p.NextHopId ?? '')) return aliError(400, 'InvalidNextHopId.NotFound', 'Specified next hop does not exist.');
    if (this.entries.some((e) => e.dest === p.DestinationCidrBlock)) return aliError(400, 'InvalidCIDRBlock.Duplicate', 'Specified CIDR block is already exists.');
    if (this.entries.some((e) => e.status === 'Pending' || e.status === 'Deleting')) return aliError(400, 'IncorrectRouteEntryStatus', 'Specified route entry has conflict status.');
    if (this.entries.filter((e) => e.type === 'Custom').length >= this.entryLimit) return aliError(400, 'QuotaExceeded.RouteEntry', 'Route entry quota exceeded in this route table.');
    const id = `rte-bp1fake${String(this.nextEntry++).padStart(6, '0')}`;
    this.entries.push({ id, dest: p.DestinationCidrBlock!, type: 'Custom', nextHopType: 'Instance', nextHopId: p.NextHopId!, status: 'Pending', name: p.RouteEntryName, settlesAt: Date.now() + this.settleMs });
    return ok({ RouteEntryId: id });
  }

  private deleteEntry(p: Record<string, string>): FakeReply {
    const e = p.RouteEntryId ? this.entries.find((x) => x.id === p.RouteEntryId) : this.entries.find((x) => x.dest === p.DestinationCidrBlock && x.nextHopId === p.NextHopId);
    if (!e) return aliError(400, 'InvalidRouteEntry.NotFound', 'Specified route entry does not exist.');
    if (e.type === 'System') return aliError(400, 'OperationDenied.SystemRouteEntry', 'System route entries cannot be deleted.');
    if (e.status !== 'Available') return aliError(400, 'IncorrectRouteEntryStatus', 'Specified route entry has conflict status.');
    e.status = 'Deleting';
    e.settlesAt = Date.now() + this.settleMs;
    return ok({});
  }
}

/** One instance's metadata service (100.100.100.200 in the cloud). */
export class FakeAliMetadata extends FakeMetadataServer {
  constructor(
    private readonly region: string,
    private readonly vpcId: string,
    private readonly instance: FakeEcs,
  ) {
    super();
  }

  protected answer(req: FakeRequest): FakeReply {
    const values: Record<string, string> = {
      '/latest/meta-data/region-id': this.region,
      '/latest/meta-data/instance-id': this.instance.instanceId,
      '/latest/meta-data/vpc-id': this.vpcId,
      '/latest/meta-data/private-ipv4': this.instance.privateIp,
    };
    const v = values[req.url.pathname];
    return v === undefined ? { status: 404, body: '' } : { status: 200, body: v };
  }
}

/** Aliyun's percent-encoding for signatures (RFC 3986, space as %20, ~ kept). */
function percent(s: string): string {
  return encodeURIComponent(s).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

let requests = 0;
function requestId(): string {
  return `4F2A9B1C-0000-4000-8000-${(++requests).toString(16).padStart(12, '0').toUpperCase()}`;
}

function ok(body: Record<string, unknown>): FakeReply {
  return { status: 200, headers: { 'content-type': 'application/json;charset=utf-8' }, body: JSON.stringify({ RequestId: requestId(), ...body }) };
}

function aliError(status: number, code: string, message: string): FakeReply {
  return {
    status,
    headers: { 'content-type': 'application/json;charset=utf-8' },
    body: JSON.stringify({ RequestId: requestId(), HostId: 'vpc.aliyuncs.com', Code: code, Message: message, Recommend: `https://api.aliyun.com/troubleshoot?q=${code}` }),
  };
}
