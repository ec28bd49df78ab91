/**
 * The network config stored at `<prefix>/config`, parsed and validated with
 * flannel's defaults and rules. Every rejection is a ConfigError naming the
 * field and the reason.
 */
import {
  formatIP4,
  formatIP6,
  ip4NetContains,
  ip6NetContains,
  mask4,
  mask6,
  parseIP4,
  parseIP4Net,
  parseIP6,
  parseIP6Net,
  type IP4Net,
  type IP6Net,
} from '../net/ipaddr.js';
import { goField } from './go-json.js';

export interface NetworkConfig {
  enableIPv4: boolean;
  enableIPv6: boolean;
  /** Masquerade and forward policy as an nftables table instead of iptables rules (flannel's EnableNFTables). */
  enableNFTables: boolean;
  network: IP4Net | null;
  subnetLen: number;
  subnetMin: number;
  subnetMax: number;
  ipv6Network: IP6Net | null;
  ipv6SubnetLen: number;
  ipv6SubnetMin: bigint;
  ipv6SubnetMax: bigint;
  /** Backend.Type, "udp" when Backend is absent (as flannel). */
  backendType: string;
  /** The Backend object verbatim (Type plus backend options). */
  backend: Record<string, unknown>;
}

export class ConfigError extends Error {
  constructor(
    readonly field: string,
    reason: string,
  ) {
    super(`invalid network config: ${field}: ${reason}`);
    this.name = 'ConfigError';
  }
}

export interface ParseNetworkConfigOptions {
  /** Backend types that may be named (the registry's); absent: any type is accepted. */
  backendTypes?: Iterable<string>;
}

const KNOWN_FIELDS = new Set(
  ['Network', 'SubnetLen', 'SubnetMin', 'SubnetMax', 'EnableIPv4', 'EnableIPv6', 'IPv6Network', 'IPv6SubnetLen', 'IPv6SubnetMin', 'IPv6SubnetMax', 'EnableNFTables', 'Backend'].map((f) =>
    f.toLowerCase(),
  ),
);

function field<T>(obj: Record<string, unknown>, name: string, kind: 'string' | 'number' | 'boolean'): T | undefined {
  const v = goField(obj, name);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== kind) throw new ConfigError(name, `must be a ${kind}, got ${JSON.stringify(v)}`);
  if (kind === 'number' && !Number.isInteger(v as number)) throw new ConfigError(name, `must be an integer, got ${v}`);
  return v as T;
}

function parseOr<T>(name: string, text: string, parse: (s: string) => T): T {
  try {
    return parse(text);
  } catch (err) {
    throw new ConfigError(name, (err as Error).message);
  }
}

export function parseNetworkConfig(text: string, opts: ParseNetworkConfigOptions = {}): NetworkConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (err) {
    throw new ConfigError('(document)', `malformed JSON: ${(err as Error).message}`);
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new ConfigError('(document)', 'must be a JSON object');
  }
  const obj = raw as Record<string, unknown>;
  for (const k of Object.keys(obj)) {
    // Go matches field names case-insensitively (see go-json.ts), so compare lower case.
    if (!KNOWN_FIELDS.has(k.toLowerCase())) {
      throw new ConfigError(k, 'unknown field');
    }
  }

  const enableIPv4 = field<boolean>(obj, 'EnableIPv4', 'boolean') ?? true;
  const enableIPv6 = field<boolean>(obj, 'EnableIPv6', 'boolean') ?? false;
  if (!enableIPv4 && !enableIPv6) throw new ConfigError('EnableIPv4', 'at least one of EnableIPv4 and EnableIPv6 must be true');

  const cfg: NetworkConfig = {
    enableIPv4,
    enableIPv6,
    enableNFTables: field<boolean>(obj, 'EnableNFTables', 'boolean') ?? false,
    network: null,
    subnetLen: 0,
    subnetMin: 0,
    subnetMax: 0,
    ipv6Network: null,
    ipv6SubnetLen: 0,
    ipv6SubnetMin: 0n,
    ipv6SubnetMax: 0n,
    backendType: 'udp',
    backend: {},
  };

  if (enableIPv4) {
    const networkText = field<string>(obj, 'Network', 'string');
    if (!networkText) throw new ConfigError('Network', 'missing: define the overlay network, e.g. "10.5.0.0/16"');
    const network = parseOr('Network', networkText, parseIP4Net);
    let subnetLen = field<number>(obj, 'SubnetLen', 'number') ?? 0;
    if (subnetLen > 0) {
      if (subnetLen > 30) throw new ConfigError('SubnetLen', `/${subnetLen} is too long: must be /30 or shorter`);
      if (subnetLen < network.prefixLen + 2) {
        throw new ConfigError('SubnetLen', `/${subnetLen} is too short for Network /${network.prefixLen}: the network must hold at least four subnets`);
      }
    } else if (subnetLen < 0) {
      throw new ConfigError('SubnetLen', 'must not be negative');
    } else if (network.prefixLen > 28) {
      throw new ConfigError('Network', `/${network.prefixLen} is too small: the smallest useful network is /28`);
    } else {
      subnetLen = network.prefixLen <= 22 ? 24 : network.prefixLen + 2;
    }
    const subnetSize = 2 ** (32 - subnetLen);
    const networkEnd = network.ip + 2 ** (32 - network.prefixLen);
    const minText = field<string>(obj, 'SubnetMin', 'string');
    const maxText = field<string>(obj, 'SubnetMax', 'string');
    // The first subnet is never handed out: its network address equals the Network's.
    const subnetMin = minText ? parseOr('SubnetMin', minText, parseIP4) : network.ip + subnetSize;
    const subnetMax = maxText ? parseOr('SubnetMax', maxText, parseIP4) : networkEnd - subnetSize;
    if (!ip4NetContains(network, subnetMin)) throw new ConfigError('SubnetMin', `${formatIP4(subnetMin)} is outside Network ${networkText}`);
    if (!ip4NetContains(network, subnetMax)) throw new ConfigError('SubnetMax', `${formatIP4(subnetMax)} is outside Network ${networkText}`);
    const m = mask4(subnetLen);
    if (((subnetMin & m) >>> 0) !== subnetMin) throw new ConfigError('SubnetMin', `${formatIP4(subnetMin)} is not on a /${subnetLen} boundary`);
    if (((subnetMax & m) >>> 0) !== subnetMax) throw new ConfigError('SubnetMax', `${formatIP4(subnetMax)} is not on a /${subnetLen} boundary`);
    if (subnetMin > subnetMax) throw new ConfigError('SubnetMin', `${formatIP4(subnetMin)} is above SubnetMax ${formatIP4(subnetMax)}`);
    Object.assign(cfg, { network, subnetLen, subnetMin, subnetMax });
  }

  if (enableIPv6) {
    const networkText = field<string>(obj, 'IPv6Network', 'string');
    if (!networkText) throw new ConfigError('IPv6Network', 'missing: EnableIPv6 needs an IPv6Network, e.g. "fc00::/48"');
    const network = parseOr('IPv6Network', networkText, parseIP6Net);
    let subnetLen = field<number>(obj, 'IPv6SubnetLen', 'number') ?? 0;
    if (subnetLen > 0) {
      if (subnetLen > 126) throw new ConfigError('IPv6SubnetLen', `/${subnetLen} is too long: must be /126 or shorter`);
      if (subnetLen < network.prefixLen + 2) {
        throw new ConfigError('IPv6SubnetLen', `/${subnetLen} is too short for IPv6Network /${network.prefixLen}: the network must hold at least four subnets`);
      }
    } else if (subnetLen < 0) {
      throw new ConfigError('IPv6SubnetLen', 'must not be negative');
    } else if (network.prefixLen > 124) {
      throw new ConfigError('IPv6Network', `/${network.prefixLen} is too small: the smallest useful network is /124`);
    } else {
      subnetLen = network.prefixLen <= 62 ? 64 : network.prefixLen + 2;
    }
    const subnetSize = 1n << BigInt(128 - subnetLen);
    const networkEnd = network.ip + (1n << BigInt(128 - network.prefixLen));
    const minText = field<string>(obj, 'IPv6SubnetMin', 'string');
    const maxText = field<string>(obj, 'IPv6SubnetMax', 'string');
    const subnetMin = minText ? parseOr('IPv6SubnetMin', minText, parseIP6) : network.ip + subnetSize;
    const subnetMax = maxText ? parseOr('IPv6SubnetMax', maxText, parseIP6) : networkEnd - subnetSize;
    if (!ip6NetContains(network, subnetMin)) throw new ConfigError('IPv6SubnetMin', `${formatIP6(subnetMin)} is outside IPv6Network ${networkText}`);
    if (!ip6NetContains(network, subnetMax)) throw new ConfigError('IPv6SubnetMax', `${formatIP6(subnetMax)} is outside IPv6Network ${networkText}`);
    const m = mask6(subnetLen);
    if ((subnetMin & m) !== subnetMin) throw new ConfigError('IPv6SubnetMin', `${formatIP6(subnetMin)} is not on a /${subnetLen} boundary`);
    if ((subnetMax & m) !== subnetMax) throw new ConfigError('IPv6SubnetMax', `${formatIP6(subnetMax)} is not on a /${subnetLen} boundary`);
    if (subnetMin > subnetMax) throw new ConfigError('IPv6SubnetMin', `${formatIP6(subnetMin)} is above IPv6SubnetMax ${formatIP6(subnetMax)}`);
    Object.assign(cfg, { ipv6Network: network, ipv6SubnetLen: subnetLen, ipv6SubnetMin: subnetMin, ipv6SubnetMax: subnetMax });
  }

  const backend = goField(obj, 'Backend');
  if (backend !== undefined && backend !== null) {
    if (typeof backend !== 'object' || Array.isArray(backend)) throw new ConfigError('Backend', 'must be a JSON object like {"Type":"udp"}');
    const b = backend as Record<string, unknown>;
    const type = field<string>(b, 'Type', 'string');
    cfg.backend = b;
    // flannel: an empty or absent Backend means udp; a Backend without Type is an error there too (empty type).
    if (!type) throw new ConfigError('Backend.Type', 'missing: name a backend, e.g. "udp", "vxlan" or "host-gw"');
    cfg.backendType = type;
  }
  if (opts.backendTypes) {
    const known = new Set(opts.backendTypes);
    if (!known.has(cfg.backendType)) {
      throw new ConfigError('Backend.Type', `unknown backend type "${cfg.backendType}" (known: ${[...known].sort().join(', ')})`);
    }
  }
  return cfg;
}
