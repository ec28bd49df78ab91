/**
 * Options of the wireguard backend, as flannel reads them from the Backend
 * object: {"Type":"wireguard","ListenPort":51820,"ListenPortV6":51821,
 * "PSK":"<base64>","PersistentKeepaliveInterval":25,"Mode":"separate"},
 * plus the host settings from the environment: WIREGUARD_KEY_FILE (as
 * flannel), FLANNEL_WIREGUARD_IMPL (kernel, userspace or auto),
 * FLANNEL_WIREGUARD_SOCKET_DIR (the userspace device's API socket).
 */
import { goField } from '../../config/go-json.js';
import { BackendOptionError } from '../errors.js';
import { intOption } from '../option-readers.js';

export const DEFAULT_LISTEN_PORT = 51820;
export const DEFAULT_LISTEN_PORT_V6 = 51821;
export const DEFAULT_KEY_FILE = '/run/flannel/wgkey';
/** flannel's figure: outer IPv6 header 40 + UDP 8 + WireGuard header 16 + tag 16. */
export const WIREGUARD_OVERHEAD = 80;
export const DEVICE_NAME = 'flannel-wg';
/** Mode separate's IPv6 device. */
export const DEVICE_NAME_V6 = 'flannel-wg-v6';

export type WireGuardMode = 'separate' | 'auto' | 'ipv4' | 'ipv6';
export type WireGuardImpl = 'kernel' | 'userspace';

export interface WireGuardOptions {
  listenPort: number;
  listenPortV6: number;
  /** 32-byte pre-shared key, or null. */
  psk: Buffer | null;
  /** Persistent keepalive in seconds; 0 = off. */
  keepaliveSeconds: number;
  mode: WireGuardMode;
}

export interface WireGuardHostSettings {
  keyFile: string;
  impl: WireGuardImpl | 'auto';
  /** Where the userspace device serves wg's API socket (wg itself looks in /var/run/wireguard). */
  socketDir: string;
}

export const DEFAULT_SOCKET_DIR = '/var/run/wireguard';

/** A WireGuard key in wg's text form: 32 bytes, base64 (44 characters). */
/** A WireGuard key in its one canonical base64 form (as `wg` prints it), else null: lease text is never trimmed or repaired. */
export function parseKey(text: string): Buffer | null {
  if (!/^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/.test(text)) return null;
  const b = Buffer.from(text, 'base64');
  return b.length === 32 && b.toString('base64') === text ? b : null;
}

export function parseWireGuardOptions(cfg: Record<string, unknown>): WireGuardOptions {
  const pskRaw = goField(cfg, 'PSK');
  let psk: Buffer | null = null;
  if (pskRaw !== undefined && pskRaw !== null && pskRaw !== '') {
    psk = typeof pskRaw === 'string' ? parseKey(pskRaw) : null;
    // Never echo a key, not even a malformed one.
    if (!psk) throw BackendOptionError.saying('wireguard', 'PSK', 'must be a WireGuard key: 32 bytes in base64, as `wg genpsk` prints');
  }
  const mode = goField(cfg, 'Mode') ?? 'separate';
  if (mode !== 'separate' && mode !== 'auto' && mode !== 'ipv4' && mode !== 'ipv6') throw new BackendOptionError('wireguard', 'Mode', 'one of separate, auto, ipv4, ipv6', mode);
  return {
    listenPort: intOption('wireguard', cfg, 'ListenPort', DEFAULT_LISTEN_PORT, 1, 65535) || DEFAULT_LISTEN_PORT,
    listenPortV6: intOption('wireguard', cfg, 'ListenPortV6', DEFAULT_LISTEN_PORT_V6, 1, 65535) || DEFAULT_LISTEN_PORT_V6,
    psk,
    keepaliveSeconds: intOption('wireguard', cfg, 'PersistentKeepaliveInterval', 0, 0, 65535),
    mode,
  };
}

export function wireGuardHostSettings(env: NodeJS.ProcessEnv = process.env): WireGuardHostSettings {
  const impl = env.FLANNEL_WIREGUARD_IMPL || 'auto';
  if (impl !== 'auto' && impl !== 'kernel' && impl !== 'userspace') throw new Error(`FLANNEL_WIREGUARD_IMPL must be auto, kernel or userspace, got ${JSON.stringify(impl)}`);
  return { keyFile: env.WIREGUARD_KEY_FILE || DEFAULT_KEY_FILE, impl, socketDir: env.FLANNEL_WIREGUARD_SOCKET_DIR || DEFAULT_SOCKET_DIR };
}
