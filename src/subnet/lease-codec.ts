/**
 * The lease value exactly as flannel writes it: Go's encoding of LeaseAttrs,
 * i.e. {"PublicIP":"192.0.2.2","PublicIPv6":null} plus BackendType,
 * BackendData and BackendV6Data when set (omitempty). Decoding is strict
 * about addresses so a malformed lease from the store is reported and
 * skipped instead of reaching the dataplane.
 */
import { isIP4, parseIP6, parseSubnetKey } from '../net/ipaddr.js';
import type { Lease, LeaseAttrs } from './types.js';
import { goField } from '../config/go-json.js';

export class LeaseDecodeError extends Error {
  constructor(key: string, reason: string) {
    super(`malformed lease ${key}: ${reason}`);
    this.name = 'LeaseDecodeError';
  }
}

export function encodeLeaseAttrs(attrs: LeaseAttrs): string {
  // Property order matters only for byte-exact comparison with flannel's output.
  const out: Record<string, unknown> = { PublicIP: attrs.publicIP, PublicIPv6: attrs.publicIPv6 ?? null };
  if (attrs.backendType) out.BackendType = attrs.backendType;
  if (attrs.backendData !== undefined && attrs.backendData !== null) out.BackendData = attrs.backendData;
  if (attrs.backendV6Data !== undefined && attrs.backendV6Data !== null) out.BackendV6Data = attrs.backendV6Data;
  return JSON.stringify(out);
}

export function decodeLeaseAttrs(key: string, text: string): LeaseAttrs {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new LeaseDecodeError(key, `not JSON (${(err as Error).message})`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new LeaseDecodeError(key, 'not a JSON object');
  const obj = raw as Record<string, unknown>;
  const publicIP = goField(obj, 'PublicIP');
  if (typeof publicIP !== 'string' || !isIP4(publicIP)) throw new LeaseDecodeError(key, `PublicIP ${JSON.stringify(publicIP)} is not an IPv4 address`);
  const v6 = goField(obj, 'PublicIPv6');
  if (v6 !== undefined && v6 !== null) {
    if (typeof v6 !== 'string') throw new LeaseDecodeError(key, 'PublicIPv6 is not a string');
    try {
      parseIP6(v6);
    } catch {
      throw new LeaseDecodeError(key, `PublicIPv6 ${JSON.stringify(v6)} is not an IPv6 address`);
    }
  }
  const backendType = goField(obj, 'BackendType');
  if (backendType !== undefined && backendType !== null && typeof backendType !== 'string') throw new LeaseDecodeError(key, 'BackendType is not a string');
  const attrs: LeaseAttrs = { publicIP, publicIPv6: typeof v6 === 'string' ? v6 : null };
  if (typeof backendType === 'string' && backendType) attrs.backendType = backendType;
  const bd = goField(obj, 'BackendData');
  if (bd !== undefined && bd !== null) attrs.backendData = bd;
  const bd6 = goField(obj, 'BackendV6Data');
  if (bd6 !== undefined && bd6 !== null) attrs.backendV6Data = bd6;
  return attrs;
}

/**
 * Build a Lease from a store key (…/subnets/10.5.34.0-24) and its value;
 * expiry and revisions as the store reported them (see Lease.expiration).
 */
export function decodeLease(
  fullKey: string,
  value: string,
  entry: { expires: boolean; expiresAt?: number; modRevision?: number; createRevision?: number } = { expires: false },
): Lease {
  const name = fullKey.slice(fullKey.lastIndexOf('/') + 1);
  const parsed = parseSubnetKey(name);
  if (!parsed) throw new LeaseDecodeError(fullKey, 'key is not a subnet (expected A.B.C.D-LEN)');
  return {
    // An IPv6-only lease carries 0.0.0.0-0 as its IPv4 part, as flannel's keys do.
    subnet: parsed.subnet.prefixLen === 0 ? null : parsed.subnet,
    ipv6Subnet: parsed.ipv6Subnet,
    attrs: decodeLeaseAttrs(fullKey, value),
    expiration: entry.expiresAt ?? (entry.expires ? Number.POSITIVE_INFINITY : 0),
    key: `subnets/${name}`,
    modRevision: entry.modRevision,
    createRevision: entry.createRevision,
  };
}
