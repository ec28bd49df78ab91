/**
 * WireGuard's cross-platform userspace API, as wireguard-go serves it, so
 * that `wg show flannel-wg` (and `wg set`) work on our device: a Unix socket
 * `<dir>/<iface>.sock` (wg looks in /var/run/wireguard), one request per
 * connection, "get=1" or "set=1" followed by key=value lines and a blank
 * line; the answer is key=value lines and "errno=N".
 *
 * Peers are flannel's (they follow the leases): `set` may change a peer's
 * endpoint, keepalive or PSK and remove a peer until the next lease event
 * puts it back; the private key, the listen port and allowed IPs (the
 * leases' subnets, which the route tables follow) belong to the daemon
 * (errno=1).
 *
 * The socket is created under a umask that leaves it 0600 from its first
 * moment (no window in which others may connect), only over a stale socket
 * (never over another kind of file), and idle connections are closed.
 */
import { createServer, type Server } from 'node:net';
import { lstat, mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { formatIP4, parseIP4 } from '../net/ipaddr.js';

/** How a device names endpoints: a u32 on the packet path, text in `wg`'s answers and requests. */
export interface EndpointCodec {
  format(addr: number, port: number): string;
  /** wg's "a.b.c.d:port" or "[v6]:port"; null when not an endpoint of this device's family. */
  parse(text: string): { addr: number; port: number } | null;
}

/** IPv4 endpoints: the u32 is the address. */
export const IPV4_ENDPOINTS: EndpointCodec = {
  format: (addr, port) => `${formatIP4(addr)}:${port}`,
  parse(text) {
    const m = /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(text);
    if (!m || Number(m[2]) > 65535) return null;
    try {
      return { addr: parseIP4(m[1]!), port: Number(m[2]) };
    } catch {
      return null;
    }
  },
};

export interface UapiPeer {
  publicKey: Buffer;
  psk: Buffer | null;
  addr: number;
  port: number;
  allowedIPs: string[];
  lastHandshakeMs: number;
  keepaliveMs: number;
  rxBytes: number;
  txBytes: number;
}

export interface UapiDevice {
  privateKey(): Buffer;
  listenPort(): number;
  readonly endpoints: EndpointCodec;
  peers(): UapiPeer[];
  /** Apply a peer change from `wg set`; false when there is no such peer. */
  updatePeer(publicKey: Buffer, change: { remove?: boolean; addr?: number; port?: number; keepaliveMs?: number; psk?: Buffer | null }): boolean;
}

const EINVAL = 22;
const EPERM = 1;
const ENOENT = 2;

/** The answer to "get=1". */
export function renderGet(dev: UapiDevice): string {
  const lines = [`private_key=${dev.privateKey().toString('hex')}`, `listen_port=${dev.listenPort()}`];
  for (const p of dev.peers()) {
    lines.push(`public_key=${p.publicKey.toString('hex')}`);
    if (p.psk) lines.push(`preshared_key=${p.psk.toString('hex')}`);
    lines.push('protocol_version=1');
    if (p.addr) lines.push(`endpoint=${dev.endpoints.format(p.addr, p.port)}`);
    lines.push(`last_handshake_time_sec=${Math.floor(p.lastHandshakeMs / 1000)}`, `last_handshake_time_nsec=${Math.floor(p.lastHandshakeMs % 1000) * 1_000_000}`);
    lines.push(`tx_bytes=${p.txBytes}`, `rx_bytes=${p.rxBytes}`, `persistent_keepalive_interval=${Math.round(p.keepaliveMs / 1000)}`);
    for (const a of p.allowedIPs) lines.push(`allowed_ip=${a}`);
  }
  lines.push('errno=0');
  return lines.join('\n') + '\n\n';
}

/** Apply "set=1" lines; returns the errno to answer. */
export function applySet(dev: UapiDevice, lines: string[]): number {
  let peer: Buffer | null = null;
  let change: Parameters<UapiDevice['updatePeer']>[1] = {};
  const flush = (): boolean => {
    if (!peer) return true;
    const ok = dev.updatePeer(peer, change);
    peer = null;
    change = {};
    return ok;
  };
  for (const line of lines) {
    const eq = line.indexOf('=');
    if (eq <= 0) return EINVAL;
    const key = line.slice(0, eq);
    const value = line.slice(eq + 1);
    switch (key) {
      case 'private_key':
      case 'listen_port':
      case 'fwmark':
        // The daemon's own: its key file and ListenPort.
        return EPERM;
      case 'replace_peers':
        return value === 'true' ? EPERM : EINVAL;
      case 'public_key': {
        if (!flush()) return ENOENT;
        if (!/^[0-9a-f]{64}$/.test(value)) return EINVAL;
        peer = Buffer.from(value, 'hex');
        break;
      }
      case 'remove':
        if (!peer) return EINVAL;
        change.remove = value === 'true';
        break;
      case 'endpoint': {
        const e = peer ? dev.endpoints.parse(value) : null;
        if (!e) return EINVAL;
        change.addr = e.addr;
        change.port = e.port;
        break;
      }
      case 'persistent_keepalive_interval':
        if (!peer || !/^\d+$/.test(value) || Number(value) > 65535) return EINVAL;
        change.keepaliveMs = Number(value) * 1000;
        break;
      case 'preshared_key':
        if (!peer || !/^[0-9a-f]{64}$/.test(value)) return EINVAL;
        change.psk = /^0+$/.test(value) ? null : Buffer.from(value, 'hex');
        break;
      case 'update_only':
      case 'protocol_version':
        if (!peer) return EINVAL;
        break;
      case 'replace_allowed_ips':
      case 'allowed_ip':
        // Allowed IPs are the peer's lease subnets: the route tables and the source checks follow the leases.
        return peer ? EPERM : EINVAL;
      default:
        return EINVAL;
    }
  }
  return flush() ? 0 : ENOENT;
}

/** A connection that sends no complete request in this time is closed. */
export const UAPI_IDLE_MS = 5000;

/** Serve the API on `<dir>/<iface>.sock` (mode 0600, as wireguard-go). */
export async function serveUapi(dir: string, iface: string, dev: UapiDevice): Promise<{ path: string; close(): Promise<void> }> {
  await mkdir(dir, { recursive: true, mode: 0o755 });
  const path = join(dir, `${iface}.sock`);
  const old = await lstat(path).catch(() => null);
  if (old && !old.isSocket()) throw new Error(`${path} exists and is not a socket; not replacing it`);
  if (old) await rm(path, { force: true });
  const server: Server = createServer((s) => {
    let text = '';
    s.setEncoding('utf8');
    s.setTimeout(UAPI_IDLE_MS, () => s.destroy());
    s.on('error', () => {});
    s.on('data', (chunk: string) => {
      text += chunk;
      if (text.length > 1 << 20) return void s.destroy();
      const end = text.indexOf('\n\n');
      if (end < 0) return;
      const [op, ...lines] = text.slice(0, end).split('\n');
      text = text.slice(end + 2);
      if (op === 'get=1') s.end(renderGet(dev));
      else if (op === 'set=1') s.end(`errno=${applySet(dev, lines)}\n\n`);
      else s.end(`errno=${EINVAL}\n\n`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // The bind happens inside listen(): under this umask the socket is born 0600.
    const umask = process.umask(0o177);
    try {
      server.listen(path, () => resolve());
    } finally {
      process.umask(umask);
    }
  });
  return {
    path,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        void rm(path, { force: true });
      }),
  };
}
