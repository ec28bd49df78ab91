/**
 * Where a cloud backend sends its requests, and its credentials with them:
 * a host setting, read from the host's environment only. The network
 * config is shared by every host and writable by anyone with write access
 * to the store; an endpoint there would let them choose where this node's
 * service-account tokens, session tokens and signed requests go. An
 * endpoint option in the config is refused with the variable to use.
 *
 * API endpoints must be https unless the host opts in
 * (FLANNEL_CLOUD_ALLOW_HTTP=1: a private endpoint, a test fake); metadata
 * endpoints are the link-local http services clouds run on every instance.
 */
import { goField } from '../../config/go-json.js';
import { BackendOptionError, BackendUnavailableError } from '../errors.js';
import { intOption } from '../option-readers.js';

/** The host's opt-in to plain-http cloud API endpoints. */
export const ALLOW_HTTP_ENV = 'FLANNEL_CLOUD_ALLOW_HTTP';

export type EndpointKind = 'api' | 'metadata';

/**
 * The endpoint from the variable, else `fallback`; without a fallback,
 * undefined when unset (the SDK then picks its own).
 */
export function endpointOption(backend: string, cfg: Record<string, unknown>, option: string, envName: string, kind: EndpointKind, fallback: string): string;
export function endpointOption(backend: string, cfg: Record<string, unknown>, option: string, envName: string, kind: EndpointKind): string | undefined;
export function endpointOption(backend: string, cfg: Record<string, unknown>, option: string, envName: string, kind: EndpointKind, fallback?: string): string | undefined {
  const fromConfig = goField(cfg, option);
  if (fromConfig !== undefined && fromConfig !== null && fromConfig !== '') {
    throw new Error(
      `invalid ${backend} backend config: ${option} is a host setting, not read from the shared network config (whoever can write the config would choose where this host's cloud credentials go); set ${envName} in flanneld's environment instead`,
    );
  }
  const given = process.env[envName] || fallback;
  if (!given) return undefined;
  // Some clouds' own variables hold host[:port] only (GCE_METADATA_HOST): plain http then.
  const raw = /^[a-z][a-z0-9+.-]*:\/\//i.test(given) ? given : `http://${given}`;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new BackendOptionError(backend, envName, 'an http:// or https:// URL', raw);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new BackendOptionError(backend, envName, 'an http:// or https:// URL', raw);
  if (url.username || url.password) throw new Error(`invalid ${backend} backend setting: ${envName} must not carry credentials in the URL`);
  if (kind === 'api' && url.protocol === 'http:' && process.env[ALLOW_HTTP_ENV] !== '1') {
    throw new Error(`invalid ${backend} backend setting: ${envName} is plain http; cloud API requests carry credentials, so only https is used unless ${ALLOW_HTTP_ENV}=1 is set on the host`);
  }
  return raw.replace(/\/+$/, '');
}

/** A string option; absent -> undefined. A secret's value never appears in the error. */
export function stringOption(backend: string, cfg: Record<string, unknown>, option: string, secret = false): string | undefined {
  const v = goField(cfg, option);
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') {
    if (secret) throw new Error(`invalid ${backend} backend config: ${option} must be a string (value not shown)`);
    throw new BackendOptionError(backend, option, 'a string', v);
  }
  return v;
}

/**
 * AccessKeyID/AccessKeySecret from the config, else ACCESS_KEY_ID and
 * ACCESS_KEY_SECRET from the host's environment, as flannel's ali-vpc and
 * tencent-vpc read them; one clear error naming both ways when neither has them.
 */
export function accessKeyPair(backend: string, cloud: string, cfg: Record<string, unknown>, env: NodeJS.ProcessEnv): { accessKeyId: string; accessKeySecret: string } {
  let accessKeyId = stringOption(backend, cfg, 'AccessKeyID');
  let accessKeySecret = stringOption(backend, cfg, 'AccessKeySecret', true);
  if (!accessKeyId || !accessKeySecret) {
    accessKeyId = env.ACCESS_KEY_ID;
    accessKeySecret = env.ACCESS_KEY_SECRET;
  }
  if (!accessKeyId || !accessKeySecret) {
    throw new BackendUnavailableError(`${backend} backend: no ${cloud} credentials: set Backend.AccessKeyID and Backend.AccessKeySecret, or ACCESS_KEY_ID and ACCESS_KEY_SECRET in the environment`);
  }
  return { accessKeyId, accessKeySecret };
}

/** The options of the clouds flannel reaches with an access-key pair (ali-vpc, tencent-vpc). */
export interface AccessKeyVpcOptions {
  accessKeyId: string;
  accessKeySecret: string;
  vpcEndpoint: string;
  metadataEndpoint: string;
  routeLimit: number;
}

/** Where each such cloud differs: its name in errors, its endpoint variables and defaults, its route-table size. */
export interface AccessKeyCloud {
  backend: string;
  cloud: string;
  vpcVariable: string;
  vpcDefault: string;
  metadataVariable: string;
  metadataDefault: string;
  routeLimit: number;
}

/** The key pair (accessKeyPair), the two endpoints from the host (endpointOption) and RouteLimit. */
export function accessKeyVpcOptions(c: AccessKeyCloud, cfg: Record<string, unknown>, env: NodeJS.ProcessEnv): AccessKeyVpcOptions {
  const keys = accessKeyPair(c.backend, c.cloud, cfg, env);
  return {
    ...keys,
    vpcEndpoint: endpointOption(c.backend, cfg, 'VPCEndpoint', c.vpcVariable, 'api', c.vpcDefault),
    metadataEndpoint: endpointOption(c.backend, cfg, 'MetadataEndpoint', c.metadataVariable, 'metadata', c.metadataDefault),
    routeLimit: intOption(c.backend, cfg, 'RouteLimit', c.routeLimit, 1, 10_000),
  };
}
