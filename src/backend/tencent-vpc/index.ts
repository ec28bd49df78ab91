/**
 * flannel's tencent-vpc backend: no encapsulation; a route in our VPC's
 * route table sends our subnet to this instance.
 */
import type { BackendContext, BackendFactory } from '../types.js';
import { intOption } from '../option-readers.js';
import { accessKeyPair, endpointOption } from '../cloud/endpoints.js';
import { CloudCounters } from '../cloud/counters.js';
import { CloudRouteBackend } from '../cloud/backend.js';
import { TencentVpcRoutes } from './vpc-routes.js';

export interface TencentVpcOptions {
  accessKeyId: string;
  accessKeySecret: string;
  vpcEndpoint: string;
  metadataEndpoint: string;
  routeLimit: number;
}

/** AccessKeyID/AccessKeySecret from the config, else ACCESS_KEY_ID/ACCESS_KEY_SECRET, as flannel reads them. */
export function parseTencentVpcOptions(cfg: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): TencentVpcOptions {
  const keys = accessKeyPair('tencent-vpc', 'Tencent Cloud', cfg, env);
  return {
    ...keys,
    vpcEndpoint: endpointOption('tencent-vpc', cfg, 'VPCEndpoint', 'TENCENTCLOUD_VPC_ENDPOINT', 'api', 'https://vpc.tencentcloudapi.com'),
    metadataEndpoint: endpointOption('tencent-vpc', cfg, 'MetadataEndpoint', 'TENCENTCLOUD_METADATA_ENDPOINT', 'metadata', 'http://metadata.tencentyun.com'),
    routeLimit: intOption('tencent-vpc', cfg, 'RouteLimit', 200, 1, 10_000),
  };
}

export const createTencentVpcBackend: BackendFactory = async (ctx: BackendContext) => {
  const counters = new CloudCounters('tencent-vpc');
  const cloud = new TencentVpcRoutes({ ...parseTencentVpcOptions(ctx.backendConfig), instanceAddress: ctx.extIface.extAddr, counters, log: ctx.log });
  return new CloudRouteBackend(ctx, cloud, counters);
};
