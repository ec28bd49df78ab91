/**
 * flannel's tencent-vpc backend: no encapsulation; a route in our VPC's
 * route table sends our subnet to this instance.
 */
import type { BackendContext, BackendFactory } from '../types.js';
import { accessKeyVpcOptions, type AccessKeyCloud, type AccessKeyVpcOptions } from '../cloud/endpoints.js';
import { CloudCounters } from '../cloud/counters.js';
import { CloudRouteBackend } from '../cloud/backend.js';
import { TencentVpcRoutes } from './vpc-routes.js';

export type TencentVpcOptions = AccessKeyVpcOptions;

const TENCENT_VPC: AccessKeyCloud = {
  backend: 'tencent-vpc',
  cloud: 'Tencent Cloud',
  vpcVariable: 'TENCENTCLOUD_VPC_ENDPOINT',
  vpcDefault: 'https://vpc.tencentcloudapi.com',
  metadataVariable: 'TENCENTCLOUD_METADATA_ENDPOINT',
  metadataDefault: 'http://metadata.tencentyun.com',
  routeLimit: 200,
};

/** AccessKeyID/AccessKeySecret from the config, else ACCESS_KEY_ID/ACCESS_KEY_SECRET, as flannel reads them. */
export function parseTencentVpcOptions(cfg: Record<string, unknown>, env: NodeJS.ProcessEnv = process.env): TencentVpcOptions {
  return accessKeyVpcOptions(TENCENT_VPC, cfg, env);
}

export const createTencentVpcBackend: BackendFactory = async (ctx: BackendContext) => {
  const counters = new CloudCounters('tencent-vpc');
  const cloud = new TencentVpcRoutes({ ...parseTencentVpcOptions(ctx.backendConfig), instanceAddress: ctx.extIface.extAddr, counters, log: ctx.log });
  return new CloudRouteBackend(ctx, cloud, counters);
};
