/**
 * flannel's aws-vpc backend: no encapsulation; our subnet's route in the
 * VPC route table points at this instance's network interface, so pod
 * addresses are routable in the VPC (an ELB can send to them).
 */
import type { BackendContext, BackendFactory } from '../types.js';
import { goField } from '../../config/go-json.js';
import { BackendOptionError } from '../errors.js';
import { intOption } from '../option-readers.js';
import { endpointOption } from '../cloud/endpoints.js';
import { CloudCounters } from '../cloud/counters.js';
import { CloudRouteBackend } from '../cloud/backend.js';
import { Ec2Routes } from './ec2-routes.js';

export interface AwsVpcOptions {
  routeTables: string[];
  ec2Endpoint?: string;
  metadataEndpoint: string;
  routeLimit: number;
}

/** RouteTableID is a string or a list of strings, as flannel reads it. */
export function parseAwsVpcOptions(cfg: Record<string, unknown>): AwsVpcOptions {
  const raw = goField(cfg, 'RouteTableID');
  let routeTables: string[] = [];
  if (typeof raw === 'string' && raw !== '') routeTables = [raw];
  else if (Array.isArray(raw) && raw.every((t) => typeof t === 'string' && t !== '')) routeTables = raw as string[];
  else if (raw !== undefined && raw !== null && raw !== '') throw new BackendOptionError('aws-vpc', 'RouteTableID', 'a route table ID or a list of them', raw);
  return {
    routeTables,
    ec2Endpoint: endpointOption('aws-vpc', cfg, 'EC2Endpoint', 'AWS_ENDPOINT_URL_EC2', 'api'),
    metadataEndpoint: endpointOption('aws-vpc', cfg, 'MetadataEndpoint', 'AWS_EC2_METADATA_SERVICE_ENDPOINT', 'metadata', 'http://169.254.169.254'),
    routeLimit: intOption('aws-vpc', cfg, 'RouteLimit', 50, 1, 10_000),
  };
}

export const createAwsVpcBackend: BackendFactory = async (ctx: BackendContext) => {
  const options = parseAwsVpcOptions(ctx.backendConfig);
  const counters = new CloudCounters('aws-vpc');
  const cloud = new Ec2Routes({ ...options, ifaceAddr: ctx.extIface.ifaceAddr, counters, log: ctx.log });
  return new CloudRouteBackend(ctx, cloud, counters);
};
