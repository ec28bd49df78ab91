/**
 * The wireguard backend's userspace path: our own WireGuard on the udp
 * backend's batched TUN/UDP pipeline. The UdpBackend keeps the device
 * (flannel-wg, a TUN), the socket (ListenPort), the route table and the
 * packet workers; the workers seal and open through WireGuardTransport;
 * the WireGuardDevice on this thread does handshakes and timers.
 */
import type { BackendContext } from '../types.js';
import type { Lease, LeaseEvent } from '../../subnet/types.js';
import { UdpBackend, type UdpBackendOptions } from '../udp/backend.js';
import { WireGuardDevice } from '../../wireguard/device.js';
import { createPeerTableBuffers, PeerTable } from '../../wireguard/peer-table.js';
import { createWgCounterBuffer, renderWgCounters, wgCounterRegion, WG_REGION_MAIN } from '../../wireguard/counters.js';
import { DEVICE_NAME, WIREGUARD_OVERHEAD, type WireGuardOptions } from './options.js';
import type { WgPeerSpec } from './peers.js';
import { serveUapi } from '../../wireguard/uapi.js';

/** How often the protocol timers run (rekey, retries, keepalives). */
const TICK_MS = 100;

export class UserspaceWireGuard {
  readonly udp: UdpBackend;
  readonly table: PeerTable;
  readonly counters = createWgCounterBuffer();
  device: WireGuardDevice | null = null;
  private timer: NodeJS.Timeout | null = null;
  private pendingPeers: WgPeerSpec[] = [];
  private uapi: { path: string; close(): Promise<void> } | null = null;

  constructor(
    private readonly ctx: BackendContext,
    private readonly options: WireGuardOptions,
    private readonly privateKey: Buffer,
    private readonly socketDir: string,
    udpOptions: UdpBackendOptions = {},
  ) {
    const buffers = createPeerTableBuffers();
    this.table = new PeerTable(buffers);
    this.udp = new UdpBackend(ctx, {
      ...udpOptions,
      tunName: udpOptions.tunName ?? DEVICE_NAME,
      port: options.listenPort,
      overhead: WIREGUARD_OVERHEAD,
      component: 'wireguard',
      wireguard: { table: buffers, counters: this.counters },
      onHandshake: (msg, addr, port) => this.device?.handleHandshake(msg, addr, port),
    });
  }

  async start(ownLease: Lease): Promise<void> {
    this.device = new WireGuardDevice({
      privateKey: this.privateKey,
      table: this.table,
      stats: wgCounterRegion(this.counters, WG_REGION_MAIN),
      socket: () => this.udp.socket,
      log: this.ctx.log,
      listenPort: this.options.listenPort,
    });
    await this.udp.start(ownLease);
    this.ctx.metrics.register('wireguard-protocol', () => renderWgCounters(this.counters, this.device?.sessionCount() ?? 0));
    this.timer = setInterval(() => this.device?.tick(), TICK_MS);
    this.timer.unref();
    this.applyPeers(this.pendingPeers);
    try {
      this.uapi = await serveUapi(this.socketDir, DEVICE_NAME, this.device);
      this.ctx.log.info('wg API socket listening', { path: this.uapi.path });
    } catch (err) {
      // `wg show` is a convenience; the dataplane works without it.
      this.ctx.log.warn('cannot serve the wg API socket', { dir: this.socketDir, error: (err as Error).message });
    }
  }

  /** Lease events for the route table (only leases that are peers; others arrive as removals). */
  handleRouteEvents(events: LeaseEvent[]): Promise<void> {
    return this.udp.handleEvents(events);
  }

  /** Peers of flannel-wg, the one device of this path (the backend refuses configurations that need another). */
  async setPeers(_device: string, peers: WgPeerSpec[]): Promise<void> {
    this.pendingPeers = peers;
    if (this.device) this.applyPeers(peers);
  }

  private applyPeers(peers: WgPeerSpec[]): void {
    this.device!.setPeers(
      peers.map((p) => ({ publicKey: p.publicKey, addr: p.endpointAddr, port: p.port, psk: this.options.psk, keepaliveMs: this.options.keepaliveSeconds * 1000, allowedIPs: p.allowedIPs })),
    );
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.uapi?.close();
    this.uapi = null;
    await this.udp.stop();
  }
}
