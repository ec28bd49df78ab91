/**
 * flannel's ali-vpc backend: no encapsulation; an entry in our VPC's
 * VRouter route table sends our subnet to this instance.
 */
import type { BackendContext, BackendFactory } from '../types.js';
import { intOption } from '../option-readers.js';
import { accessKeyPair, endpointOption } from '../cloud/endpoints.js';
import { CloudCounters } from '../cloud/counters.js';
import { CloudRouteBackend } from '../cloud/backend.js';
import { VpcRoutes } from './vpc-routes.js';

export interface AliVpcOptions {
  accessKeyId: string;
  accessKeySecret: string;
  vpcEndpoint: string;
  metadataEndpoint: string;
  routeLimit: number;
}

/** AccessKeyID/AccessKeySecret from the config, else ACCESS_KEY_ID/ACCESS_KEY_SECRET, as flannel reads them. */
export function parseAliVpcOptions(cfg: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): AliVpcOptions {
  const keys = accessKeyPair('ali-vpc', 'Aliyun', cfg, env);
  return {
    ...keys,
    vpcEndpoint: endpointOption('ali-vpc', cfg, 'VPCEndpoint', 'ALICLOUD_VPC_ENDPOINT', 'api', 'https://vpc.aliyuncs.com'),
    metadataEndpoint: endpointOption('ali-vpc', cfg, 'MetadataEndpoint', 'ALICLOUD_METADATA_ENDPOINT', 'metadata', 'http://100.100.100.200'),
    routeLimit: intOption('ali-vpc', cfg, 'RouteLimit', 50, 1, 10_000),
  };
}

export const createAliVpcBackend: BackendFactory = async (ctx: BackendContext) => {
  const counters = new CloudCounters('ali-vpc');
  const cloud = new VpcRoutes({ ...parseAliVpcOptions(ctx.backendConfig), counters, log: ctx.log });
  return new CloudRouteBackend(ctx, cloud, counters);
};
