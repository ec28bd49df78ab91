/**
 * flannel's gce backend: no encapsulation; a project route
 * `flannel-<subnet>` in our network sends our subnet to this instance.
 */
import type { BackendContext, BackendFactory } from '../types.js';
import { intOption } from '../option-readers.js';
import { endpointOption } from '../cloud/endpoints.js';
import { CloudCounters } from '../cloud/counters.js';
import { CloudRouteBackend } from '../cloud/backend.js';
import { ComputeRoutes } from './compute-routes.js';

export interface GceOptions {
  computeEndpoint?: string;
  metadataEndpoint: string;
  routeLimit: number;
}

export function parseGceOptions(cfg: Record<string, unknown>): GceOptions {
  return {
    computeEndpoint: endpointOption('gce', cfg, 'ComputeEndpoint', 'FLANNEL_GCE_COMPUTE_ENDPOINT', 'api'),
    // GCE_METADATA_HOST is the variable Google's own libraries read (host[:port], no scheme).
    metadataEndpoint: endpointOption('gce', cfg, 'MetadataEndpoint', 'GCE_METADATA_HOST', 'metadata', 'http://169.254.169.254'),
    routeLimit: intOption('gce', cfg, 'RouteLimit', 100, 1, 100_000),
  };
}

export const createGceBackend: BackendFactory = async (ctx: BackendContext) => {
  const counters = new CloudCounters('gce');
  const cloud = new ComputeRoutes({ ...parseGceOptions(ctx.backendConfig), counters, log: ctx.log });
  return new CloudRouteBackend(ctx, cloud, counters);
};
