/**
 * Typed reads of backend options from the Backend object, with
 * Go's case-insensitive field names and a clear error naming the backend,
 * the option and what it must be.
 */
import { goField } from '../config/go-json.js';
import { BackendOptionError } from './errors.js';

export function intOption(backend: string, cfg: Record<string, unknown>, name: string, def: number, min: number, max: number): number {
  const v = goField(cfg, name);
  if (v === undefined || v === null) return def;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new BackendOptionError(backend, name, `an integer in ${min}..${max}`, v);
  return v;
}

export function boolOption(backend: string, cfg: Record<string, unknown>, name: string): boolean {
  const v = goField(cfg, name);
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw new BackendOptionError(backend, name, 'true or false', v);
  return v;
}
