/**
 * Where a cloud backend sends its requests: every API and metadata
 * endpoint can be set by a backend option and by an environment variable
 * (the option wins), for private endpoints, other partitions, and tests.
 */
import { goField } from '../../config/go-json.js';
import { BackendOptionError } from '../errors.js';

/**
 * The endpoint from the option, else the variable, else `fallback`; without
 * a fallback, undefined when neither is set (the SDK then picks its own).
 */
export function endpointOption(backend: string, cfg: Record<string, unknown>, option: string, envName: string, fallback: string): string;
export function endpointOption(backend: string, cfg: Record<string, unknown>, option: string, envName: string): string | undefined;
export function endpointOption(backend: string, cfg: Record<string, unknown>, option: string, envName: string, fallback?: string): string | undefined {
  const fromOption = goField(cfg, option);
  if (fromOption !== undefined && fromOption !== null && typeof fromOption !== 'string') throw new BackendOptionError(backend, option, 'a URL string', fromOption);
  const given = (fromOption as string | undefined) || process.env[envName] || fallback;
  if (!given) return undefined;
  // Some clouds' own variables hold host[:port] only (GCE_METADATA_HOST): plain http then.
  const raw = /^[a-z][a-z0-9+.-]*:\/\//i.test(given) ? given : `http://${given}`;
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    throw new BackendOptionError(backend, `${option} (or ${envName})`, 'an http:// or https:// URL', raw);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new BackendOptionError(backend, `${option} (or ${envName})`, 'an http:// or https:// URL', raw);
  if (url.username || url.password) throw new Error(`invalid ${backend} backend config: ${option} (or ${envName}) must not carry credentials in the URL`);
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
