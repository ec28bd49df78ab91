/**
 * tencent-vpc's side of the route-sync contract, on Tencent Cloud's VPC API
 * (2017-03-12, TC3-HMAC-SHA256 signed JSON POSTs) through the VPC client
 * of Tencent's own SDK (tencentcloud-sdk-nodejs). As flannel's tencent-vpc:
 * region and VPC from the metadata service (region, then the MAC's
 * vpc-id), the VPC's first route table (DescribeRouteTables filtered by
 * vpc-id), and a USER route for our subnet with gateway type NORMAL_CVM
 * and gateway id our instance's address; a disabled one is deleted and
 * created again.
 */
import { vpc } from 'tencentcloud-sdk-nodejs/tencentcloud/services/vpc/index.js';
import type { Logger } from '../../log.js';
import { CloudError, type CloudIdentity, type CloudRoute, type RouteCloud } from '../cloud/types.js';
import type { CloudCounters } from '../cloud/counters.js';
import { metadataGet } from '../cloud/http.js';

export interface TencentVpcRoutesOptions {
  accessKeyId: string;
  accessKeySecret: string;
  /** https://vpc.tencentcloudapi.com (a host setting). */
  vpcEndpoint: string;
  metadataEndpoint: string;
  routeLimit: number;
  /** The gateway our route points at: this instance's address (flannel uses the external interface's). */
  instanceAddress: string;
  counters: CloudCounters;
  log: Logger;
}

const GATEWAY_TYPE = 'NORMAL_CVM';

interface TcRoute {
  RouteId?: number;
  DestinationCidrBlock?: string;
  GatewayType?: string;
  GatewayId?: string;
  RouteType?: string;
  Enabled?: boolean;
  RouteDescription?: string;
}

type VpcClient = InstanceType<typeof vpc.v20170312.Client>;

export class TencentVpcRoutes implements RouteCloud {
  readonly name = 'tencent-vpc';
  readonly routeLimit: number;
  private client: VpcClient | null = null;

  constructor(private readonly opts: TencentVpcRoutesOptions) {
    this.routeLimit = opts.routeLimit;
  }

  /** The SDK client for `region`: endpoint and protocol from the host's setting. */
  private clientFor(region: string): VpcClient {
    const url = new URL(this.opts.vpcEndpoint);
    return new vpc.v20170312.Client({
      credential: { secretId: this.opts.accessKeyId, secretKey: this.opts.accessKeySecret },
      region,
      profile: { signMethod: 'TC3-HMAC-SHA256', httpProfile: { endpoint: url.host, protocol: `${url.protocol}//`, reqMethod: 'POST', reqTimeout: 10 } },
    });
  }

  async discover(): Promise<CloudIdentity> {
    const md = (p: string) => metadataGet('Tencent Cloud metadata service', `${this.opts.metadataEndpoint}/latest/meta-data/${p}`, this.opts.counters);
    const region = await md('placement/region');
    const mac = await md('mac');
    if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/i.test(mac)) throw new CloudError('retry', `the metadata service gave ${JSON.stringify(mac.slice(0, 40))} as our MAC`);
    const vpcId = await md(`network/interfaces/macs/${mac}/vpc-id`);
    this.client = this.clientFor(region);
    const tables = await this.call<{ RouteTableSet?: { RouteTableId?: string }[] }>('DescribeRouteTables', { Filters: [{ Name: 'vpc-id', Values: [vpcId] }] });
    const table = tables.RouteTableSet?.[0]?.RouteTableId;
    if (!table) throw new CloudError('fatal', `no route table in VPC ${vpcId} (${region}, from the metadata service)`);
    return { target: this.opts.instanceAddress, tables: [table], describe: { region, vpc: vpcId, routeTable: table, instanceAddress: this.opts.instanceAddress } };
  }

  async listRoutes(table: string): Promise<CloudRoute[]> {
    const r = await this.call<{ RouteTableSet?: { RouteTableId?: string; RouteSet?: TcRoute[] }[] }>('DescribeRouteTables', { RouteTableIds: [table] });
    const t = r.RouteTableSet?.find((x) => x.RouteTableId === table);
    if (!t) throw new CloudError('fatal', `route table ${table} does not exist any more`, 'ResourceNotFound');
    return (t.RouteSet ?? []).map(toCloudRoute);
  }

  async createRoute(table: string, dest: string, target: string): Promise<void> {
    await this.call('CreateRoutes', {
      RouteTableId: table,
      Routes: [{ DestinationCidrBlock: dest, GatewayType: GATEWAY_TYPE, GatewayId: target, Enabled: true, RouteDescription: routeDescription(dest) }],
    });
  }

  async replaceRoute(table: string, existing: CloudRoute, target: string): Promise<void> {
    await this.deleteRoute(table, existing);
    await this.createRoute(table, existing.dest, target);
  }

  async deleteRoute(table: string, route: CloudRoute): Promise<void> {
    const id = Number(route.handle);
    if (!Number.isInteger(id)) return;
    try {
      await this.call('DeleteRoutes', { RouteTableId: table, Routes: [{ RouteId: id }] });
    } catch (err) {
      if (err instanceof CloudError && /NotFound/.test(err.code ?? '')) return;
      throw err;
    }
  }

  /** One signed call, counted; failures as CloudErrors with Tencent's code (the message never carries the secret). */
  private async call<T = unknown>(action: string, req: Record<string, unknown>): Promise<T> {
    if (!this.client) throw new CloudError('retry', 'tencent-vpc: not discovered yet');
    this.opts.counters.call(action);
    try {
      const fn = (this.client as unknown as Record<string, (r: unknown) => Promise<unknown>>)[action]!;
      return (await fn.call(this.client, req)) as T;
    } catch (err) {
      const e = classifyTencentError(action, err);
      this.opts.counters.error(e.code ?? 'unknown');
      throw e;
    }
  }
}

function toCloudRoute(r: TcRoute): CloudRoute {
  const dest = r.DestinationCidrBlock ?? '';
  return {
    dest,
    target: r.GatewayType === GATEWAY_TYPE ? (r.GatewayId ?? null) : null,
    // A disabled route carries no traffic: replaced, as flannel deletes and re-creates it.
    state: r.Enabled === false ? 'blackhole' : 'active',
    handle: r.RouteId === undefined ? undefined : String(r.RouteId),
    foreign: r.RouteType !== 'USER' || r.GatewayType !== GATEWAY_TYPE,
    // Our daemons describe the routes they create: only such a route of a departed lease is deleted.
    written: r.RouteDescription === routeDescription(dest),
  };
}

/** The description our daemons give the route they create for a lease's CIDR. */
export function routeDescription(dest: string): string {
  return `flannel ${dest}`;
}

/**
 * What a Tencent Cloud failure means for the loop. Not named here: worth
 * another try (InternalError, ResourceUnavailable, network errors).
 */
export function classifyTencentError(action: string, err: unknown): CloudError {
  const e = err as { code?: string; message?: string; httpCode?: number };
  const code = e.code ?? (e.httpCode ? `http_${e.httpCode}` : 'NetworkingError');
  const message = (e.message ?? '').replace(/\s+/g, ' ').slice(0, 200);
  const what = `${action} failed: ${code}${message ? `: ${message}` : ''}`;
  if (code === 'AuthFailure.UnauthorizedOperation' || code.startsWith('UnauthorizedOperation')) {
    return new CloudError('fatal', `${what}: the access key's CAM policy must allow vpc:${action}`, code);
  }
  if (code.startsWith('AuthFailure')) return new CloudError('fatal', `Tencent Cloud refused our credentials (${code}): check AccessKeyID/AccessKeySecret or ACCESS_KEY_ID/ACCESS_KEY_SECRET`, code);
  if (code.startsWith('RequestLimitExceeded')) return new CloudError('retry', what, code);
  if (code.startsWith('LimitExceeded')) return new CloudError('blocked', `the route table is full (${what}): raise the quota, remove unused routes, or use the vxlan backend`, code);
  if (/Duplicate|ResourceInUse/.test(code)) return new CloudError('conflict', what, code);
  return new CloudError('retry', what, code);
}
