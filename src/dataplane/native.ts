/**
 * Typed loader for the N-API addon in native/ (built by `npm ci`).
 *
 * Contract shared by every caller: packets live in one Buffer split into
 * fixed-size slots (packet i starts at i * slotSize); lengths travel in a
 * Uint32Array beside it. Each call moves a whole batch. Calls that wait use
 * poll() with a timeout so a worker thread can notice a stop request.
 * Errors are thrown as JS Errors with `code` set to the errno name
 * (EPERM, ENOENT, EBUSY, ...) and a message saying what to do.
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface NativeAddon {
  /**
   * Open /dev/net/tun and attach to (or create) device `name` with
   * IFF_TUN | IFF_NO_PI (| IFF_MULTI_QUEUE when multiQueue). Non-blocking fd.
   */
  tunOpen(name: string, multiQueue: boolean): { fd: number; name: string };
  /**
   * Read up to `max` packets from the TUN fd into slots of `buf`, writing
   * lengths into `lens`. Waits up to timeoutMs for the first packet, then
   * drains without waiting. Returns the number of packets (0 on timeout).
   */
  tunRead(fd: number, buf: Buffer, slotSize: number, lens: Uint32Array, max: number, timeoutMs: number): number;
  /** Write `count` packets (slots of buf, lengths in lens). Returns packets written; drops on EAGAIN after a short poll. */
  tunWrite(fd: number, buf: Buffer, slotSize: number, lens: Uint32Array, count: number): number;
  /** A non-blocking IPv4 UDP socket bound to bindAddr:port, SO_REUSEPORT when reusePort. */
  udpOpen(bindAddr: string, port: number, reusePort: boolean): number;
  /**
   * recvmmsg up to `max` datagrams into slots; lens[i] = length (slotSize + 1
   * when the datagram was truncated), addrs[i] = source IPv4 as u32 (host
   * order), ports[i] = source port. Waits up to timeoutMs for the first.
   */
  udpRecv(fd: number, buf: Buffer, slotSize: number, lens: Uint32Array, addrs: Uint32Array, ports: Uint16Array, max: number, timeoutMs: number): number;
  /** sendmmsg `count` datagrams to addrs[i]:ports[i] (u32 host order). Returns datagrams sent. */
  udpSend(fd: number, buf: Buffer, slotSize: number, lens: Uint32Array, addrs: Uint32Array, ports: Uint16Array, count: number): number;
  /** Local port of a bound socket (for port 0 binds in tests). */
  udpLocalPort(fd: number): number;
  close(fd: number): void;
}

let cached: NativeAddon | null = null;

export function loadNative(): NativeAddon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  // dist/src/dataplane -> repo root
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  try {
    cached = require(join(root, 'native', 'build', 'Release', 'flannel_native.node')) as NativeAddon;
  } catch (err) {
    throw new Error(`native addon not built (run "npm ci" or "npm run install"): ${(err as Error).message}`);
  }
  return cached;
}
