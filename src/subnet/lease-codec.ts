/**
 * The lease value exactly as flannel writes it: Go's encoding of LeaseAttrs,
 * i.e. {"PublicIP":"192.0.2.2","PublicIPv6":null} plus BackendType,
 * BackendData and BackendV6Data when set (omitempty). Decoding is strict
 * so a malformed lease from the store is reported and skipped instead of
 * reaching the dataplane: any host with write access to the store writes
 * lease text, and its addresses end up as tokens of `ip -batch` lines,
 * xfrm policies, charon's config and files. An address is kept only in its
 * canonical form (the text formatting the parsed value gives back, as
 * flannel's Go writes it); "192.0.2.7\u000b", " 192.0.2.7" or
 * "192.0.2.7 dev lo" are refused, never trimmed.
 */
import { parseSubnetKey } from '../net/ipaddr.js';
import { isCanonicalIP4, isCanonicalIP6 } from '../net/canonical.js';
import type { Lease, LeaseAttrs } from './types.js';
import { goField } from '../config/go-json.js';

/** Why a lease was refused as malformed: a fixed list (a metric label). */
export type MalformedReason =
  | 'malformed_json'
  | 'malformed_public_ip'
  | 'malformed_public_ipv6'
  | 'malformed_backend_type'
  | 'malformed_key'
  // Kubernetes mode: a node's annotations or podCIDRs (subnet/kube/node-lease.ts).
  | 'malformed_backend_data'
  | 'malformed_pod_cidr'
  | 'other_backend_type';
export const MALFORMED_REASONS: readonly MalformedReason[] = [
  'malformed_json',
  'malformed_public_ip',
  'malformed_public_ipv6',
  'malformed_backend_type',
  'malformed_key',
  'malformed_backend_data',
  'malformed_pod_cidr',
  'other_backend_type',
];

export class LeaseDecodeError extends Error {
  constructor(
    key: string,
    detail: string,
    readonly reason: MalformedReason,
  ) {
    super(`malformed lease ${JSON.stringify(key)}: ${detail}`);
    this.name = 'LeaseDecodeError';
  }
}

/** The text itself when it is an IPv4 address written canonically, else null. */
export const canonicalIP4 = (text: unknown): string | null => (typeof text === 'string' && isCanonicalIP4(text) ? text : null);

/** The text itself when it is an IPv6 address written canonically (RFC 5952, as Go writes it), else null. */
export const canonicalIP6 = (text: unknown): string | null => (typeof text === 'string' && isCanonicalIP6(text) ? text : null);

/** flannel's backend type names are short lowercase words ("host-gw", "aws-vpc"); anything else is refused. */
export const BACKEND_TYPE_RE = /^[a-z0-9-]{1,32}$/;

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
    throw new LeaseDecodeError(key, `not JSON (${(err as Error).message})`, 'malformed_json');
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw new LeaseDecodeError(key, 'not a JSON object', 'malformed_json');
  const obj = raw as Record<string, unknown>;
  const publicIP = canonicalIP4(goField(obj, 'PublicIP'));
  if (publicIP === null) throw new LeaseDecodeError(key, `PublicIP ${quote(goField(obj, 'PublicIP'))} is not an IPv4 address in canonical form`, 'malformed_public_ip');
  const v6raw = goField(obj, 'PublicIPv6');
  const v6 = v6raw === undefined || v6raw === null ? null : canonicalIP6(v6raw);
  if (v6raw !== undefined && v6raw !== null && v6 === null) throw new LeaseDecodeError(key, `PublicIPv6 ${quote(v6raw)} is not an IPv6 address in canonical form`, 'malformed_public_ipv6');
  const backendType = goField(obj, 'BackendType');
  if (backendType !== undefined && backendType !== null && backendType !== '' && (typeof backendType !== 'string' || !BACKEND_TYPE_RE.test(backendType))) {
    throw new LeaseDecodeError(key, `BackendType ${quote(backendType)} is not a backend name`, 'malformed_backend_type');
  }
  const attrs: LeaseAttrs = { publicIP, publicIPv6: v6 };
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
  if (!parsed) throw new LeaseDecodeError(fullKey, 'key is not a subnet (expected A.B.C.D-LEN)', 'malformed_key');
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

/** A value from the store for a log line: JSON-quoted (control characters escaped) and cut short. */
function quote(v: unknown): string {
  const t = JSON.stringify(v) ?? String(v);
  return t.length > 80 ? `${t.slice(0, 77)}...` : t;
}
