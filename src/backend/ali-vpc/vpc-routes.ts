/**
 * ali-vpc's side of the route-sync contract, on Aliyun's VPC API
 * (2016-04-28, RPC style: signed GET queries, JSON answers) through
 * @alicloud/pop-core. As flannel's ali-vpc: region, instance and VPC from
 * the metadata service; the VPC's VRouter and its route table; a custom
 * entry for our subnet with next hop type Instance, waited for until it is
 * Available (entries are created and deleted asynchronously).
 */
import RPCClient from '@alicloud/pop-core';
import type { Logger } from '../../log.js';
import { CloudError, type CloudIdentity, type CloudRoute, type RouteCloud } from '../cloud/types.js';
import type { CloudCounters } from '../cloud/counters.js';
import { metadataGet } from '../cloud/http.js';

export interface VpcRoutesOptions {
  accessKeyId: string;
  accessKeySecret: string;
  vpcEndpoint: string;
  metadataEndpoint: string;
  routeLimit: number;
  counters: CloudCounters;
  log: Logger;
  /** How long to wait for an entry to become Available or go away (default 60 s, as flannel). */
  settleTimeoutMs?: number;
}

const API_VERSION = '2016-04-28';

interface RouteEntry {
  RouteEntryId?: string;
  RouteEntryName?: string;
  DestinationCidrBlock?: string;
  Status?: string;
  Type?: string;
  NextHops?: { NextHop?: { NextHopType?: string; NextHopId?: string }[] };
}

export class VpcRoutes implements RouteCloud {
  readonly name = 'ali-vpc';
  readonly routeLimit: number;
  private readonly client: RPCClient;
  private region = '';

  constructor(private readonly opts: VpcRoutesOptions) {
    this.routeLimit = opts.routeLimit;
    this.client = new RPCClient({ accessKeyId: opts.accessKeyId, accessKeySecret: opts.accessKeySecret, endpoint: opts.vpcEndpoint, apiVersion: API_VERSION });
  }

  async discover(): Promise<CloudIdentity> {
    const md = (p: string) => metadataGet('Aliyun metadata service', `${this.opts.metadataEndpoint}/latest/meta-data/${p}`, this.opts.counters);
    const region = await md('region-id');
    const instanceId = await md('instance-id');
    const vpcId = await md('vpc-id');
    this.region = region;
    const vpcs = await this.call<{ Vpcs?: { Vpc?: { VRouterId?: string }[] } }>('DescribeVpcs', { RegionId: region, VpcId: vpcId });
    const vRouterId = vpcs.Vpcs?.Vpc?.[0]?.VRouterId;
    if (!vRouterId) throw new CloudError('fatal', `the VPC API does not know our VPC ${vpcId} in ${region} (from the metadata service)`);
    const routers = await this.call<{ VRouters?: { VRouter?: { RouteTableIds?: { RouteTableId?: string[] } }[] } }>('DescribeVRouters', { RegionId: region, VRouterId: vRouterId });
    const table = routers.VRouters?.VRouter?.[0]?.RouteTableIds?.RouteTableId?.[0];
    if (!table) throw new CloudError('fatal', `VRouter ${vRouterId} of VPC ${vpcId} has no route table`);
    return { target: instanceId, tables: [table], describe: { region, instance: instanceId, vpc: vpcId, vrouter: vRouterId } };
  }

  async listRoutes(table: string): Promise<CloudRoute[]> {
    return (await this.entries(table)).filter((e) => e.Type !== 'System').map(toCloudRoute);
  }

  async createRoute(table: string, dest: string, target: string): Promise<void> {
    await this.call('CreateRouteEntry', {
      RegionId: this.region,
      RouteTableId: table,
      DestinationCidrBlock: dest,
      NextHopType: 'Instance',
      NextHopId: target,
      RouteEntryName: entryName(dest),
    });
    await this.settle(table, dest, (e) => e?.Status === 'Available', 'Available');
  }

  async replaceRoute(table: string, existing: CloudRoute, target: string): Promise<void> {
    await this.deleteRoute(table, existing);
    await this.createRoute(table, existing.dest, target);
  }

  async deleteRoute(table: string, route: CloudRoute): Promise<void> {
    try {
      await this.call('DeleteRouteEntry', route.handle ? { RegionId: this.region, RouteEntryId: route.handle } : { RegionId: this.region, RouteTableId: table, DestinationCidrBlock: route.dest, NextHopId: route.target ?? '' });
    } catch (err) {
      if (err instanceof CloudError && /NotFound|NotExist/.test(err.code ?? '')) return;
      throw err;
    }
    await this.settle(table, route.dest, (e) => e === undefined, 'deleted');
  }

  private async entries(table: string, dest?: string): Promise<RouteEntry[]> {
    const out: RouteEntry[] = [];
    let next: string | undefined;
    do {
      const page = await this.call<{ RouteEntrys?: { RouteEntry?: RouteEntry[] }; NextToken?: string }>('DescribeRouteEntryList', {
        RegionId: this.region,
        RouteTableId: table,
        MaxResult: 100,
        ...(dest ? { DestinationCidrBlock: dest } : {}),
        ...(next ? { NextToken: next } : {}),
      });
      out.push(...(page.RouteEntrys?.RouteEntry ?? []));
      next = page.NextToken || undefined;
    } while (next);
    return out;
  }

  /** Poll the entry for dest until done(entry) holds (entries settle asynchronously). */
  private async settle(table: string, dest: string, done: (e: RouteEntry | undefined) => boolean, what: string): Promise<void> {
    const deadline = Date.now() + (this.opts.settleTimeoutMs ?? 60_000);
    for (let i = 0; ; i++) {
      const entry = (await this.entries(table, dest)).find((e) => e.DestinationCidrBlock === dest);
      if (done(entry)) return;
      if (Date.now() > deadline) throw new CloudError('retry', `route entry ${dest} in ${table} not ${what} in time (status ${entry?.Status ?? 'absent'})`);
      // Entries usually settle within a second: look again soon, then once a second.
      await new Promise((r) => setTimeout(r, Math.min(1000, 250 * 2 ** i)));
    }
  }

  /** One signed RPC call, counted; failures as CloudErrors with Aliyun's code (pop-core's own message carries the signed URL: never logged). */
  private async call<T = unknown>(action: string, params: Record<string, unknown>): Promise<T> {
    this.opts.counters.call(action);
    try {
      return (await this.client.request(action, params, { method: 'GET', timeout: 10_000 })) as T;
    } catch (err) {
      const e = classifyAliError(action, err);
      this.opts.counters.error(e.code ?? 'unknown');
      throw e;
    }
  }
}

function toCloudRoute(e: RouteEntry): CloudRoute {
  const hop = e.NextHops?.NextHop?.[0];
  const status = e.Status ?? '';
  return {
    dest: e.DestinationCidrBlock ?? '',
    target: hop?.NextHopId || null,
    state: status === 'Available' ? 'active' : 'pending',
    handle: e.RouteEntryId,
    foreign: e.Type !== 'Custom' || hop?.NextHopType !== 'Instance',
    // Our daemons name the entries they create: only such an entry of a departed lease is deleted.
    written: e.RouteEntryName === entryName(e.DestinationCidrBlock ?? ''),
  };
}

/** The name our daemons give the entry they create for a lease's CIDR. */
export function entryName(dest: string): string {
  return `flannel-${dest.replace(/[./]/g, '-')}`;
}

const CREDENTIALS = /^(SignatureDoesNotMatch|InvalidAccessKeyId|IncompleteSignature|InvalidSecurityToken)/;

/**
 * What an Aliyun failure means for the loop. Everything not named here is
 * worth another try: Throttling*, ServiceUnavailable, InternalError,
 * OperationConflict, IncorrectRouteEntryStatus (an entry still settling),
 * TaskConflict, network errors (ECONNREFUSED, ...).
 */
export function classifyAliError(action: string, err: unknown): CloudError {
  const e = err as { code?: string; data?: { Code?: string; Message?: string }; message?: string };
  const code = e.data?.Code ?? e.code ?? 'Error';
  // Only Aliyun's own message: pop-core appends the request URL (with our AccessKeyId and signature).
  const message = (e.data?.Message ?? (e.data ? '' : (e.message ?? '').split(', URL:')[0]) ?? '').replace(/\s+/g, ' ').slice(0, 200);
  const what = `${action} failed: ${code}${message ? `: ${message}` : ''}`;
  if (CREDENTIALS.test(code)) return new CloudError('fatal', `Aliyun refused our credentials (${code}): check AccessKeyID/AccessKeySecret or ACCESS_KEY_ID/ACCESS_KEY_SECRET`, code);
  if (/^(Forbidden|NoPermission)/.test(code)) return new CloudError('fatal', `${what}: the access key's RAM policy must allow vpc:${action}`, code);
  if (/^QuotaExceed/.test(code)) return new CloudError('blocked', `the route table is full (${what}): ask Aliyun for a higher quota, remove unused entries, or use the vxlan backend`, code);
  if (/Duplicate|AlreadyExist/.test(code)) return new CloudError('conflict', what, code);
  return new CloudError('retry', what, code);
}
