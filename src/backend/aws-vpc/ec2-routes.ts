/**
 * aws-vpc's side of the route-sync contract, on the EC2 Query API through
 * @aws-sdk/client-ec2. What it finds and writes, as flannel's aws-vpc:
 * the ENI holding our interface address is the next hop of our subnet's
 * route; the route table is RouteTableID's, else the one associated with
 * the ENI's subnet, else the VPC's main table.
 *
 * The SDK's own retries are off (maxAttempts 1): the route-sync loop is the
 * one place that decides when to try again, with backoff and jitter, and
 * every call it makes is counted.
 */
import {
  EC2Client,
  CreateRouteCommand,
  DeleteRouteCommand,
  DescribeInstancesCommand,
  DescribeRouteTablesCommand,
  ModifyInstanceAttributeCommand,
  ModifyNetworkInterfaceAttributeCommand,
  ReplaceRouteCommand,
  type Filter,
  type Instance,
  type InstanceNetworkInterface,
} from '@aws-sdk/client-ec2';
import type { Logger } from '../../log.js';
import { boundAwsResponses, type MiddlewareStackLike } from '../cloud/body-limit.js';
import { CloudError, type CloudIdentity, type CloudRoute, type RouteCloud } from '../cloud/types.js';
import type { CloudCounters } from '../cloud/counters.js';
import { InstanceMetadata } from './imds.js';

export interface Ec2RoutesOptions {
  /** Our interface address (flannel's IfaceAddr): the ENI that holds it is the next hop. */
  ifaceAddr: string;
  /** RouteTableID from the config; empty: detect. */
  routeTables: string[];
  ec2Endpoint?: string;
  metadataEndpoint: string;
  routeLimit: number;
  counters: CloudCounters;
  log: Logger;
}

interface OurInterface {
  instanceId: string;
  eniId: string;
  subnetId: string;
  vpcId: string;
  /** Unknown when DescribeInstances is denied. */
  sourceDestCheck: boolean | undefined;
  primary: boolean;
}

export class Ec2Routes implements RouteCloud {
  readonly name = 'aws-vpc';
  readonly routeLimit: number;
  private readonly imds: InstanceMetadata;
  private client: EC2Client | null = null;
  private ours: OurInterface | null = null;

  constructor(private readonly opts: Ec2RoutesOptions) {
    this.routeLimit = opts.routeLimit;
    this.imds = new InstanceMetadata(opts.metadataEndpoint, opts.counters);
  }

  async discover(): Promise<CloudIdentity> {
    const instanceId = await this.imds.get('instance-id');
    const region = await this.imds.get('placement/region');
    // We pin an SDK release that supports Node 20; its multi-line notice about later
    // releases would break the one-line-per-event log, so say it once in ours instead.
    if (!process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED && Number(process.versions.node.split('.')[0]) < 22) {
      process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';
      this.opts.log.debug('AWS SDK releases after January 2027 need Node 22; this build pins one that runs on Node 20');
    }
    if (!this.client) {
      this.client = new EC2Client({ region, endpoint: this.opts.ec2Endpoint, maxAttempts: 1 });
      boundAwsResponses(this.client.middlewareStack as unknown as MiddlewareStackLike, 'EC2');
    }
    const ours = await this.findInterface(instanceId);
    this.ours = ours;
    const tables = this.opts.routeTables.length > 0 ? this.opts.routeTables : [await this.detectRouteTable(ours)];
    return { target: ours.eniId, tables, describe: { instance: instanceId, region, eni: ours.eniId } };
  }

  /** Our instance routes traffic for the pods' addresses: the source/destination check must be off. */
  async afterDiscover(): Promise<void> {
    const ours = this.ours!;
    if (ours.sourceDestCheck === false) return;
    const permission = ours.primary ? 'ec2:ModifyInstanceAttribute' : 'ec2:ModifyNetworkInterfaceAttribute';
    try {
      if (ours.primary) await this.call('ModifyInstanceAttribute', (c) => c.send(new ModifyInstanceAttributeCommand({ InstanceId: ours.instanceId, SourceDestCheck: { Value: false } })));
      else await this.call('ModifyNetworkInterfaceAttribute', (c) => c.send(new ModifyNetworkInterfaceAttributeCommand({ NetworkInterfaceId: ours.eniId, SourceDestCheck: { Value: false } })));
      this.opts.log.info('disabled the source/destination check', { instance: ours.instanceId, eni: ours.eniId });
    } catch (err) {
      const denied = err instanceof CloudError && err.code === 'UnauthorizedOperation';
      this.opts.log.warn(
        denied
          ? `cannot disable the source/destination check: ${permission} is not granted (the walkthrough's policy leaves it out); disable it in the EC2 console (instance > Actions > Networking > Change source/destination check > Stop), or pods on other hosts cannot reach this one`
          : 'cannot disable the source/destination check; disable it in the EC2 console, or pods on other hosts cannot reach this one',
        { instance: ours.instanceId, error: (err as Error).message },
      );
    }
  }

  async listRoutes(table: string): Promise<CloudRoute[]> {
    const out = await this.call('DescribeRouteTables', (c) => c.send(new DescribeRouteTablesCommand({ RouteTableIds: [table] })));
    const rt = out.RouteTables?.[0];
    if (!rt) throw new CloudError('fatal', `route table ${table} does not exist (RouteTableID)`, 'InvalidRouteTableID.NotFound');
    return (rt.Routes ?? []).map((r) => {
      const instanceRoute = Boolean(r.NetworkInterfaceId || r.InstanceId);
      return {
        dest: r.DestinationCidrBlock ?? r.DestinationIpv6CidrBlock ?? r.DestinationPrefixListId ?? '',
        target: r.NetworkInterfaceId ?? r.InstanceId ?? r.GatewayId ?? r.NatGatewayId ?? r.TransitGatewayId ?? r.VpcPeeringConnectionId ?? null,
        state: r.State === 'blackhole' ? 'blackhole' : 'active',
        foreign: !instanceRoute || r.Origin === 'CreateRouteTable' || r.Origin === 'EnableVgwRoutePropagation',
      } satisfies CloudRoute;
    });
  }

  async createRoute(table: string, dest: string, target: string): Promise<void> {
    await this.call('CreateRoute', (c) => c.send(new CreateRouteCommand({ RouteTableId: table, DestinationCidrBlock: dest, NetworkInterfaceId: target })));
  }

  async replaceRoute(table: string, existing: CloudRoute, target: string): Promise<void> {
    await this.call('ReplaceRoute', (c) => c.send(new ReplaceRouteCommand({ RouteTableId: table, DestinationCidrBlock: existing.dest, NetworkInterfaceId: target })));
  }

  async deleteRoute(table: string, route: CloudRoute): Promise<void> {
    try {
      await this.call('DeleteRoute', (c) => c.send(new DeleteRouteCommand({ RouteTableId: table, DestinationCidrBlock: route.dest })));
    } catch (err) {
      if (err instanceof CloudError && err.code === 'InvalidRoute.NotFound') return;
      throw err;
    }
  }

  /**
   * EC2 routes carry no name or tag to say a flannel daemon wrote them: the
   * target a host's daemon writes is the ENI holding its PublicIP (its
   * interface address), found with DescribeInstances (the walkthrough's
   * permission), one call per 200 addresses. Denied: nothing is found, so
   * no departed lease's route is deleted (logged once).
   */
  async targetOfHosts(publicIPs: string[]): Promise<Map<string, string>> {
    const found = new Map<string, string>();
    for (let i = 0; i < publicIPs.length; i += 200) {
      const chunk = publicIPs.slice(i, i + 200);
      let out;
      try {
        out = await this.call('DescribeInstances', (c) => c.send(new DescribeInstancesCommand({ Filters: [{ Name: 'network-interface.addresses.private-ip-address', Values: chunk }] })));
      } catch (err) {
        if (!(err instanceof CloudError) || err.code !== 'UnauthorizedOperation') throw err;
        if (!this.warnedNoLookup) this.opts.log.warn('ec2:DescribeInstances is denied: routes of departed leases cannot be told apart from others and are left in place');
        this.warnedNoLookup = true;
        return found;
      }
      for (const r of out.Reservations ?? []) {
        for (const inst of r.Instances ?? []) {
          for (const n of inst.NetworkInterfaces ?? []) {
            for (const a of n.PrivateIpAddresses ?? []) if (a.PrivateIpAddress && n.NetworkInterfaceId && chunk.includes(a.PrivateIpAddress)) found.set(a.PrivateIpAddress, n.NetworkInterfaceId);
          }
        }
      }
    }
    return found;
  }

  private warnedNoLookup = false;

  private async findInterface(instanceId: string): Promise<OurInterface> {
    const ip = this.opts.ifaceAddr;
    let instance: Instance | undefined;
    try {
      const out = await this.call('DescribeInstances', (c) => c.send(new DescribeInstancesCommand({ InstanceIds: [instanceId] })));
      instance = out.Reservations?.[0]?.Instances?.[0];
    } catch (err) {
      if (!(err instanceof CloudError) || err.code !== 'UnauthorizedOperation') throw err;
      if (this.opts.routeTables.length === 0) {
        throw new CloudError('fatal', 'ec2:DescribeInstances is denied, so the route table cannot be found: grant it (as in the walkthrough policy) or set Backend.RouteTableID', err.code);
      }
      this.opts.log.warn('ec2:DescribeInstances is denied; taking our interface from the instance metadata', { instance: instanceId });
      const fromMetadata = await this.imds.interfaceFor(ip);
      if (!fromMetadata) throw new CloudError('fatal', `no network interface of instance ${instanceId} holds ${ip} (instance metadata)`);
      return { instanceId, ...fromMetadata, sourceDestCheck: undefined, primary: true };
    }
    if (!instance) throw new CloudError('fatal', `EC2 does not know instance ${instanceId} (region from the metadata service; is the EC2 endpoint right?)`);
    const eni = (instance.NetworkInterfaces ?? []).find((n: InstanceNetworkInterface) => (n.PrivateIpAddresses ?? []).some((a) => a.PrivateIpAddress === ip));
    if (!eni?.NetworkInterfaceId || !eni.SubnetId || !eni.VpcId) {
      throw new CloudError('fatal', `no network interface of instance ${instanceId} holds our interface address ${ip} (use --iface or --iface-regex to pick the VPC interface)`);
    }
    this.opts.log.info('found our network interface', { eni: eni.NetworkInterfaceId, addr: ip });
    return {
      instanceId,
      eniId: eni.NetworkInterfaceId,
      subnetId: eni.SubnetId,
      vpcId: eni.VpcId,
      sourceDestCheck: eni.SourceDestCheck,
      primary: (eni.Attachment?.DeviceIndex ?? 0) === 0,
    };
  }

  private async detectRouteTable(ours: OurInterface): Promise<string> {
    const bySubnet = await this.describeTables([{ Name: 'association.subnet-id', Values: [ours.subnetId] }]);
    if (bySubnet) {
      this.opts.log.info('found the route table of our subnet', { table: bySubnet, subnet: ours.subnetId });
      return bySubnet;
    }
    const main = await this.describeTables([
      { Name: 'association.main', Values: ['true'] },
      { Name: 'vpc-id', Values: [ours.vpcId] },
    ]);
    if (!main) throw new CloudError('fatal', `no route table is associated with subnet ${ours.subnetId} and VPC ${ours.vpcId} has no main route table: set Backend.RouteTableID`);
    this.opts.log.info('using the main route table of our VPC (our subnet has none of its own)', { table: main, vpc: ours.vpcId });
    return main;
  }

  private async describeTables(filters: Filter[]): Promise<string | undefined> {
    const out = await this.call('DescribeRouteTables', (c) => c.send(new DescribeRouteTablesCommand({ Filters: filters })));
    return out.RouteTables?.[0]?.RouteTableId;
  }

  /** One API call, counted, with the SDK's error turned into a CloudError (code and message; never a credential). */
  private async call<T>(action: string, fn: (client: EC2Client) => Promise<T>): Promise<T> {
    this.opts.counters.call(action);
    try {
      return await fn(this.client!);
    } catch (err) {
      const e = classifyEc2Error(action, err);
      this.opts.counters.error(e.code ?? 'unknown');
      throw e;
    }
  }
}

const CREDENTIALS_REFUSED = new Set(['AuthFailure', 'InvalidClientTokenId', 'SignatureDoesNotMatch', 'UnrecognizedClientException', 'InvalidAccessKeyId', 'ExpiredToken', 'RequestExpired']);

/**
 * What an EC2 failure means for the loop. Everything not named here is
 * worth another try: RequestLimitExceeded and the other throttling codes,
 * InternalError/Unavailable and any 5xx, IncorrectState, network errors.
 */
export function classifyEc2Error(action: string, err: unknown): CloudError {
  const e = err as { name?: string; Code?: string; message?: string; $metadata?: { httpStatusCode?: number }; code?: string };
  const code = e.Code ?? e.name ?? 'Error';
  const status = e.$metadata?.httpStatusCode;
  const detail = (e.message ?? '').replace(/\s+/g, ' ').slice(0, 200);
  if (code === 'CredentialsProviderError') {
    return new CloudError('fatal', 'no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), or attach an instance role with the policy from the README', code);
  }
  if (CREDENTIALS_REFUSED.has(code)) {
    return new CloudError('fatal', `EC2 refused our credentials (${code}) on ${action}: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or the instance role`, code);
  }
  if (code === 'UnauthorizedOperation') return new CloudError('fatal', `ec2:${action} is not allowed for our credentials: add it to the instance role's policy (see the README)`, code);
  if (code === 'RouteLimitExceeded') return new CloudError('blocked', `the route table is full (RouteLimitExceeded on ${action}): ask AWS for a higher limit, remove unused routes, or use the vxlan backend`, code);
  if (code === 'RouteAlreadyExists' || (action === 'ReplaceRoute' && code === 'InvalidRoute.NotFound')) return new CloudError('conflict', `${action}: ${code} (another writer changed the route meanwhile)`, code);
  if (code === 'InvalidRouteTableID.NotFound' || code === 'InvalidRouteTableId.Malformed') return new CloudError('fatal', `${action}: ${code}: check Backend.RouteTableID`, code);
  return new CloudError('retry', `${action} failed: ${code}${status !== undefined ? ` (HTTP ${status})` : ''}${detail && detail !== code ? `: ${detail}` : ''}`, code);
}
