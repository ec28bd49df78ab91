/**
 * flannel's ali-vpc backend: no encapsulation; an entry in our VPC's
 * VRouter route table sends our subnet to this instance.
 */
import type { BackendContext, BackendFactory } from '../types.js';
import { accessKeyVpcOptions, type AccessKeyCloud, type AccessKeyVpcOptions } from '../cloud/endpoints.js';
import { CloudCounters } from '../cloud/counters.js';
import { CloudRouteBackend } from '../cloud/backend.js';
import { VpcRoutes } from './vpc-routes.js';

export type AliVpcOptions = AccessKeyVpcOptions;

const ALI_VPC: AccessKeyCloud = {
  backend: 'ali-vpc',
  cloud: 'Aliyun',
  vpcVariable: 'ALICLOUD_VPC_ENDPOINT',
  vpcDefault: 'https://vpc.aliyuncs.com',
  metadataVariable: 'ALICLOUD_METADATA_ENDPOINT',
  metadataDefault: 'http://100.100.100.200',
  routeLimit: 50,
};

/** AccessKeyID/AccessKeySecret from the config, else ACCESS_KEY_ID/ACCESS_KEY_SECRET, as flannel reads them. */
export function parseAliVpcOptions(cfg: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): AliVpcOptions {
  return accessKeyVpcOptions(ALI_VPC, cfg, env);
}

export const createAliVpcBackend: BackendFactory = async (ctx: BackendContext) => {
  const counters = new CloudCounters('ali-vpc');
  const cloud = new VpcRoutes({ ...parseAliVpcOptions(ctx.backendConfig), counters, log: ctx.log });
  return new CloudRouteBackend(ctx, cloud, counters);
};
