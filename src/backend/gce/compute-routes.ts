/**
 * gce's side of the route-sync contract, on the Compute Engine v1 REST API
 * through @googleapis/compute. As flannel's gce backend: our route is named
 * `flannel-<subnet with dashes>`, lives in our network, and its next hop is
 * our instance. Routes are project-wide and immutable: "replace" is delete
 * then insert, and every write is a global operation we wait for.
 *
 * Credentials: the instance service account's token from the metadata
 * server (what flannel gets from google.DefaultClient on GCE), or the
 * service-account key file GOOGLE_APPLICATION_CREDENTIALS names.
 */
import { auth as googleAuth, compute_v1 } from '@googleapis/compute';
import type { Logger } from '../../log.js';
import { API_BODY_LIMIT } from '../cloud/body-limit.js';
import { CloudError, type CloudIdentity, type CloudRoute, type RouteCloud } from '../cloud/types.js';
import type { CloudCounters } from '../cloud/counters.js';
import { GceMetadata } from './metadata.js';

export interface ComputeRoutesOptions {
  computeEndpoint?: string;
  metadataEndpoint: string;
  /** Used when the project's ROUTES quota cannot be read. */
  routeLimit: number;
  counters: CloudCounters;
  log: Logger;
}

const COMPUTE_SCOPE = 'https://www.googleapis.com/auth/compute';

/** flannel's route name for a subnet: dots and the slash become dashes. */
export function gceRouteName(dest: string): string {
  return `flannel-${dest.replace(/[./]/g, '-')}`;
}

/** "https://.../compute/v1/projects/p/zones/z/instances/n" -> "projects/p/zones/z/instances/n": endpoints differ, resources do not. */
function resourcePath(url: string | null | undefined): string | null {
  if (!url) return null;
  const i = url.indexOf('projects/');
  return i < 0 ? url : url.slice(i);
}

export class ComputeRoutes implements RouteCloud {
  readonly name = 'gce';
  routeLimit: number;
  private readonly metadata: GceMetadata;
  private api: compute_v1.Compute | null = null;
  private project = '';
  private networkLink = '';
  private instanceLink = '';

  constructor(private readonly opts: ComputeRoutesOptions) {
    this.routeLimit = opts.routeLimit;
    this.metadata = new GceMetadata(opts.metadataEndpoint, opts.counters);
  }

  async discover(): Promise<CloudIdentity> {
    const project = await this.metadata.get('project/project-id');
    const zone = await this.metadata.getName('instance/zone');
    const instanceName = await this.metadata.get('instance/name');
    const network = await this.metadata.getName('instance/network-interfaces/0/network');
    this.project = project;
    this.api ??= new compute_v1.Compute({ auth: this.authClient(), rootUrl: this.opts.computeEndpoint ? `${this.opts.computeEndpoint}/` : undefined, retry: false, maxContentLength: API_BODY_LIMIT } as compute_v1.Options);
    const api = this.api;
    const net = await this.call('networks.get', () => api.networks.get({ project, network }));
    const inst = await this.call('instances.get', () => api.instances.get({ project, zone, instance: instanceName }));
    this.networkLink = net.data.selfLink ?? '';
    this.instanceLink = inst.data.selfLink ?? '';
    if (!this.networkLink || !this.instanceLink) throw new CloudError('retry', 'compute API answered without selfLink for our network or instance');
    if (inst.data.canIpForward === false) {
      this.opts.log.warn('this instance was created without IP forwarding: packets for pods will be dropped by GCE (recreate it with --can-ip-forward)', { instance: instanceName });
    }
    const proj = await this.call('projects.get', () => api.projects.get({ project }));
    const quota = proj.data.quotas?.find((q) => q.metric === 'ROUTES');
    if (quota?.limit) this.routeLimit = quota.limit;
    return { target: resourcePath(this.instanceLink)!, tables: [project], describe: { project, zone, instance: instanceName, network, routeQuota: String(this.routeLimit) } };
  }

  async listRoutes(project: string): Promise<CloudRoute[]> {
    const api = this.api!;
    const items: compute_v1.Schema$Route[] = [];
    let pageToken: string | undefined;
    do {
      const page = await this.call('routes.list', () => api.routes.list({ project, maxResults: 500, pageToken }));
      items.push(...(page.data.items ?? []));
      pageToken = page.data.nextPageToken ?? undefined;
    } while (pageToken);
    const ourNetwork = resourcePath(this.networkLink);
    const routes: CloudRoute[] = items.map((r) => ({
      // Routes of other networks still count against the project quota, but never match a lease.
      dest: resourcePath(r.network) === ourNetwork ? (r.destRange ?? '') : '',
      target: resourcePath(r.nextHopInstance),
      state: (r.warnings ?? []).some((w) => w.code === 'NEXT_HOP_INSTANCE_NOT_FOUND') ? 'blackhole' : 'active',
      handle: r.name ?? undefined,
      // Only flannel's own route names are ours to replace or delete.
      foreign: !(r.name ?? '').startsWith('flannel-') || !r.nextHopInstance,
      written: r.name === gceRouteName(r.destRange ?? ''),
    }));
    // Two routes may share a destination in GCE; the loop keys by destination, so let ours be the one it sees.
    return routes.sort((a, b) => Number(!a.foreign) - Number(!b.foreign));
  }

  async createRoute(project: string, dest: string, target: string): Promise<void> {
    const api = this.api!;
    const op = await this.call('routes.insert', () =>
      api.routes.insert({
        project,
        requestBody: { name: gceRouteName(dest), destRange: dest, network: this.networkLink, nextHopInstance: this.instanceLink, priority: 1000, description: `flannel lease ${dest} -> ${target}` },
      }),
    );
    await this.waitFor(project, op.data);
  }

  async replaceRoute(project: string, existing: CloudRoute, target: string): Promise<void> {
    await this.deleteRoute(project, existing);
    await this.createRoute(project, existing.dest, target);
  }

  async deleteRoute(project: string, route: CloudRoute): Promise<void> {
    const api = this.api!;
    try {
      const op = await this.call('routes.delete', () => api.routes.delete({ project, route: route.handle ?? gceRouteName(route.dest) }));
      await this.waitFor(project, op.data);
    } catch (err) {
      if (err instanceof CloudError && err.code === '404') return;
      throw err;
    }
  }

  /** Wait for a global operation to be DONE (operations.wait blocks server-side up to 2 min per call), then report its error. */
  private async waitFor(project: string, op: compute_v1.Schema$Operation): Promise<void> {
    const api = this.api!;
    let current = op;
    for (let i = 0; current.status !== 'DONE'; i++) {
      if (i >= 30) throw new CloudError('retry', `operation ${current.name} (${current.operationType}) not done after ${i} waits`);
      const name = current.name ?? '';
      current = (await this.call('globalOperations.wait', () => api.globalOperations.wait({ project, operation: name }))).data;
    }
    const first = current.error?.errors?.[0];
    if (!first) return;
    const code = first.code ?? 'UNKNOWN';
    const what = `${current.operationType ?? 'operation'} of ${resourcePath(current.targetLink) ?? 'a route'} failed: ${code}${first.message ? `: ${first.message}` : ''}`;
    this.opts.counters.error(code);
    if (code === 'QUOTA_EXCEEDED') throw new CloudError('blocked', `the project's route quota is used up (${what}): ask for a higher ROUTES quota, remove unused routes, or use the vxlan backend`, code);
    if (code === 'ALREADY_EXISTS' || code === 'RESOURCE_NOT_READY' || code === 'RESOURCE_IN_USE_BY_ANOTHER_RESOURCE') throw new CloudError('conflict', what, code);
    if (code === 'RESOURCE_NOT_FOUND' && current.operationType === 'delete') return;
    throw new CloudError('retry', what, code);
  }

  private authClient() {
    if (process.env.GOOGLE_APPLICATION_CREDENTIALS) return new googleAuth.GoogleAuth({ scopes: [COMPUTE_SCOPE] });
    const client = new googleAuth.OAuth2();
    client.refreshHandler = async () => {
      const t = await this.metadata.token();
      return { access_token: t.token, expiry_date: t.expiresAt };
    };
    return client;
  }

  /** One API call, counted, with its failure as a CloudError (status, reason, message: never a token). */
  private async call<T>(action: string, fn: () => Promise<T>): Promise<T> {
    this.opts.counters.call(action);
    try {
      return await fn();
    } catch (err) {
      const e = classifyGceError(action, err);
      this.opts.counters.error(e.code ?? 'unknown');
      throw e;
    }
  }
}

export function classifyGceError(action: string, err: unknown): CloudError {
  if (err instanceof CloudError) return err;
  const e = err as { status?: number; code?: string | number; message?: string; cause?: unknown; response?: { status?: number; data?: { error?: { message?: string; status?: string; errors?: { reason?: string }[] } } } };
  if (e.cause instanceof CloudError) return e.cause;
  const status = e.response?.status ?? (typeof e.status === 'number' ? e.status : undefined);
  const body = e.response?.data?.error;
  const reason = body?.errors?.[0]?.reason ?? body?.status ?? '';
  const message = (body?.message ?? e.message ?? '').replace(/\s+/g, ' ').slice(0, 200);
  const code = status !== undefined ? String(status) : String(e.code ?? 'network');
  const what = `${action} failed: HTTP ${status ?? '-'}${reason ? ` ${reason}` : ''}${message ? `: ${message}` : ''}`;
  if (status === 401) return new CloudError('fatal', `the compute API refused our credentials (${what}): check the instance's service account or GOOGLE_APPLICATION_CREDENTIALS`, code);
  if (status === 403 && /rateLimitExceeded|userRateLimitExceeded/.test(reason)) return new CloudError('retry', what, code);
  if (status === 403 && /quotaExceeded|QUOTA_EXCEEDED/i.test(reason)) return new CloudError('blocked', `the project's route quota is used up (${what})`, code);
  if (status === 403) return new CloudError('fatal', `${what}: the instance needs the compute-rw scope (gcloud compute instances create --scopes compute-rw) and a role with compute.routes.* and compute.networks.updatePolicy`, code);
  if (status === 404 && action !== 'routes.delete') return new CloudError(action === 'routes.list' ? 'retry' : 'fatal', `${what} (project, zone, instance or network from the metadata server not found)`, code);
  if (status === 409) return new CloudError('conflict', what, code);
  return new CloudError('retry', what, code);
}
