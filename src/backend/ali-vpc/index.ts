/**
 * flannel's ali-vpc backend: no encapsulation; an entry in our VPC's
 * VRouter route table sends our subnet to this instance.
 */
import type { BackendContext, BackendFactory } from '../types.js';
import { intOption } from '../option-readers.js';
import { endpointOption, stringOption } from '../cloud/endpoints.js';
import { CloudCounters } from '../cloud/counters.js';
import { CloudRouteBackend } from '../cloud/backend.js';
import { BackendUnavailableError } from '../errors.js';
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
  let accessKeyId = stringOption('ali-vpc', cfg, 'AccessKeyID');
  let accessKeySecret = stringOption('ali-vpc', cfg, 'AccessKeySecret', true);
  if (!accessKeyId || !accessKeySecret) {
    accessKeyId = env.ACCESS_KEY_ID;
    accessKeySecret = env.ACCESS_KEY_SECRET;
  }
  if (!accessKeyId || !accessKeySecret) {
    throw new BackendUnavailableError('ali-vpc backend: no Aliyun credentials: set Backend.AccessKeyID and Backend.AccessKeySecret, or ACCESS_KEY_ID and ACCESS_KEY_SECRET in the environment');
  }
  return {
    accessKeyId,
    accessKeySecret,
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
