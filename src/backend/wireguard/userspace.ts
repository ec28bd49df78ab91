/**
 * The wireguard backend's userspace path: our own WireGuard on the
 * userspace dataplane (src/dataplane), one instance per device the Mode
 * asks for (flannel-wg, and flannel-wg-v6 in Mode separate with IPv6).
 * Each dataplane keeps its device (a TUN), its socket (ListenPort or
 * ListenPortV6), its route tables and its packet workers; the workers seal
 * and open through WireGuardTransport, and the routes name each subnet's
 * peer by the slot of its public key (cryptokey routing); a
 * WireGuardDevice on this thread does handshakes and timers. Both devices
 * share the private key, as flannel's kernel devices do, and nothing else.
 */
import type { BackendContext } from '../types.js';
import type { Lease, LeaseEvent } from '../../subnet/types.js';
import type { UdpBackendOptions } from '../udp/backend.js';
import { UserspaceDataplane, type EndpointMode } from '../../dataplane/dataplane.js';
import type { EndpointTable6 } from '../../dataplane/endpoints6.js';
import type { TransportNote } from '../../wireguard/transport.js';
import { publicKeyOf } from '../../wireguard/primitives.js';
import { holdPath, type Hold } from '../../native/exclusive-lock.js';
import { mkdirSync } from 'node:fs';
import { formatIP4 } from '../../net/ipaddr.js';
import { join } from 'node:path';
import { WireGuardDevice } from '../../wireguard/device.js';
import { createPeerTableBuffers, PeerTable } from '../../wireguard/peer-table.js';
import { createWgCounterBuffer, renderWgCounters, wgCounterRegion, WG_REGION_MAIN } from '../../wireguard/counters.js';
import { IPV4_ENDPOINTS, serveUapi, type EndpointCodec } from '../../wireguard/uapi.js';
import { DEVICE_NAME_V6, WIREGUARD_OVERHEAD, type WireGuardOptions } from './options.js';
import { peerOf, type WgDeviceSpec, type WgPeerSpec } from './peers.js';

/** How often the protocol timers run (rekey, retries, keepalives). */
const TICK_MS = 100;

/**
 * How a device's peers are reached: Modes separate and ipv4 over their own
 * family, Mode ipv6 over IPv6, Mode auto per peer, over one socket for both
 * families when IPv6 is on (else every endpoint is IPv4).
 */
export function endpointModeOf(spec: WgDeviceSpec, enableIPv6: boolean): EndpointMode {
  if (spec.endpoints === 'auto') return enableIPv6 ? 'dual' : 'ipv4';
  return spec.endpoints;
}

/**
 * `wg`'s "[addr]:port" (and "a.b.c.d:port" for an IPv4 peer, when the
 * socket is dual-stack) for a device whose peer addresses are ids of an
 * endpoint table.
 */
function idEndpoints(table: EndpointTable6, held: () => number[], ipv4Too: boolean): EndpointCodec {
  return {
    format: (id, port) => {
      const text = table.text(id);
      return text.includes(':') ? `[${text}]:${port}` : `${text}:${port}`;
    },
    parse(text) {
      // An IPv6 address in brackets (it has a colon), or with a dual-stack socket a bare IPv4 one.
      const m = /^\[([0-9A-Fa-f.]*:[0-9A-Fa-f:.]*)\]:(\d+)$/.exec(text) ?? (ipv4Too ? /^(\d+\.\d+\.\d+\.\d+):(\d+)$/.exec(text) : null);
      if (!m || Number(m[2]) > 65535) return null;
      try {
        const id = table.idOfText(m[1]!);
        table.hold('peers', [...held(), id]);
        return { addr: id, port: Number(m[2]) };
      } catch {
        return null;
      }
    },
  };
}

/** One userspace WireGuard device. */
export class UserspaceWireGuard {
  readonly udp: UserspaceDataplane;
  readonly table: PeerTable;
  readonly counters = createWgCounterBuffer();
  device: WireGuardDevice | null = null;
  private timer: NodeJS.Timeout | null = null;
  private pendingPeers: WgPeerSpec[] = [];
  private uapi: { path: string; close(): Promise<void> } | null = null;
  private readonly metricsPrefix: string;
  private socketHold: Hold | null = null;

  constructor(
    private readonly ctx: BackendContext,
    private readonly options: WireGuardOptions,
    private readonly privateKey: Buffer,
    private readonly socketDir: string,
    readonly spec: WgDeviceSpec,
    udpOptions: UdpBackendOptions = {},
  ) {
    const buffers = createPeerTableBuffers();
    this.table = new PeerTable(buffers);
    // flannel_wireguard_... for flannel-wg, flannel_wireguard_v6_... for flannel-wg-v6.
    const component = spec.name === DEVICE_NAME_V6 ? 'wireguard_v6' : 'wireguard';
    this.metricsPrefix = `flannel_${component}`;
    this.udp = new UserspaceDataplane(ctx, {
      ...udpOptions,
      tunName: spec.name === DEVICE_NAME_V6 ? spec.name : (udpOptions.tunName ?? spec.name),
      port: spec.listenPort,
      overhead: WIREGUARD_OVERHEAD,
      component,
      pods: { ipv4: spec.carriesIPv4, ipv6: spec.carriesIPv6 },
      bindAny: true,
      endpoints: endpointModeOf(spec, ctx.config.enableIPv6),
      // The route tables name each subnet's peer by its key's slot: the transport seals for that key,
      // sends to its current endpoint, and accepts from it only sources inside that key's subnets.
      peerIdOf: (lease) => {
        const v = peerOf(lease, spec, { extAddr: ctx.extIface.extAddr, extAddr6: ctx.extIface.extAddr6 });
        return 'peer' in v ? (this.device?.slotOf(v.peer.publicKey) ?? null) : null;
      },
      // routeList shows the address the key's peer is reached at now.
      describePeer: (slot) => {
        const p = this.device?.peerInSlot(slot);
        if (!p) return `peer ${slot}`;
        return this.udp.endpoints6 ? this.udp.endpoints6.text(p.addr) : formatIP4(p.addr);
      },
      encapsulation: {
        module: new URL('../../wireguard/transport.js', import.meta.url).href,
        config: { table: buffers, counters: this.counters, publicKey: Uint8Array.from(publicKeyOf(privateKey)), mtu: ctx.extIface.mtu - WIREGUARD_OVERHEAD },
      },
      onEncapMessage: (note) => this.note(note as TransportNote),
      // New workers have empty replay windows: no keypair of the old ones may be used again.
      onRestart: () => this.device?.dropAllKeypairs(),
    });
  }

  get name(): string {
    return this.udp.tunName;
  }

  /**
   * What the rx worker posted: a handshake datagram (on an IPv6 socket with
   * its source's bytes, named here by an endpoint id the device can answer),
   * or a peer's transport packet from a new IPv6 source (roaming: the
   * source becomes a held lease endpoint id).
   */
  private note(n: TransportNote): void {
    const table = this.udp.endpoints6;
    if (n.type === 'handshake') {
      this.table.handshakeTaken();
      const msg = Buffer.from(n.data);
      if (table && n.source6) this.device?.handleHandshake(msg, table.idForSource(n.source6), n.port, n.source6);
      else this.device?.handleHandshake(msg, n.addr, n.port);
      return;
    }
    if (table) this.device?.roamSlot(n.peer, table.idForSource(n.source6), n.port);
  }

  /**
   * A peer roams to `id`: on an IPv6 socket a transient id (a handshake's
   * or a packet's source) becomes a lease endpoint id, held while a peer's
   * endpoint is it; else `id` is the IPv4 address itself.
   */
  private pinEndpoint(id: number): number {
    const table = this.udp.endpoints6;
    if (!table) return id;
    const pinned = table.idOfText(table.text(id));
    const inUse = [];
    for (let p = 0; p < this.table.peerCapacity; p++) if (this.table.peerActive(p)) inUse.push(this.table.endpointAddr(p));
    table.hold('roamed', [...inUse, pinned]);
    return pinned;
  }

  async start(ownLease: Lease): Promise<void> {
    const table = this.udp.endpoints6;
    this.device = new WireGuardDevice({
      privateKey: this.privateKey,
      table: this.table,
      stats: wgCounterRegion(this.counters, WG_REGION_MAIN),
      socket: () => this.udp.socket,
      log: this.ctx.log,
      listenPort: this.spec.listenPort,
      pinEndpoint: (id) => this.pinEndpoint(id),
      endpoints: table ? idEndpoints(table, () => this.device?.peers().map((p) => p.addr) ?? [], this.udp.endpointMode === 'dual') : IPV4_ENDPOINTS,
    });
    await this.udp.start(ownLease);
    this.ctx.metrics.register(`${this.metricsPrefix}-protocol`, () => renderWgCounters(this.counters, this.device?.sessionCount() ?? 0, this.metricsPrefix));
    this.timer = setInterval(() => this.device?.tick(), TICK_MS);
    this.timer.unref();
    this.applyPeers(this.pendingPeers);
    // Another daemon's socket at this path is never replaced: the second daemon stops (FLANNEL_WIREGUARD_SOCKET_DIR tells them apart).
    mkdirSync(this.socketDir, { recursive: true, mode: 0o755 });
    this.socketHold = holdPath(join(this.socketDir, `${this.name}.sock`), 'the wg API socket', 'FLANNEL_WIREGUARD_SOCKET_DIR');
    try {
      this.uapi = await serveUapi(this.socketDir, this.name, this.device);
      this.ctx.log.info('wg API socket listening', { device: this.name, path: this.uapi.path });
    } catch (err) {
      // `wg show` is a convenience; the dataplane works without it.
      this.ctx.log.warn('cannot serve the wg API socket', { device: this.name, dir: this.socketDir, error: (err as Error).message });
    }
  }

  /** Lease events for the route table (only leases that are peers of this device; others arrive as removals). */
  handleRouteEvents(events: LeaseEvent[]): Promise<void> {
    return this.udp.handleEvents(events);
  }

  setPeers(peers: WgPeerSpec[]): void {
    this.pendingPeers = peers;
    if (this.device) this.applyPeers(peers);
  }

  private applyPeers(peers: WgPeerSpec[]): void {
    const configs = [];
    for (const p of peers) {
      // The same u32 the route table names this endpoint by: the transport finds the peer from it.
      let addr: number;
      try {
        addr = this.udp.endpointId(p.endpointIP);
      } catch (err) {
        this.ctx.log.error('cannot add the wireguard peer', { device: this.name, endpoint: p.endpointIP, error: (err as Error).message });
        continue;
      }
      configs.push({ publicKey: p.publicKey, addr, port: p.port, psk: this.options.psk, keepaliveMs: this.options.keepaliveSeconds * 1000, allowedIPs: p.allowedIPs });
    }
    this.device!.setPeers(configs);
    this.udp.endpoints6?.hold('peers', configs.map((c) => c.addr));
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.uapi?.close();
    this.uapi = null;
    await this.socketHold?.release();
    this.socketHold = null;
    await this.udp.stop();
  }
}

/** The userspace devices of one backend, addressed by device name. */
export class UserspaceWireGuardSet {
  readonly devices: UserspaceWireGuard[];

  constructor(ctx: BackendContext, options: WireGuardOptions, privateKey: Buffer, socketDir: string, specs: WgDeviceSpec[], udpOptions: UdpBackendOptions = {}) {
    this.devices = specs.map((spec) => new UserspaceWireGuard(ctx, options, privateKey, socketDir, spec, udpOptions));
  }

  private byName(name: string): UserspaceWireGuard | undefined {
    return this.devices.find((d) => d.spec.name === name);
  }

  async start(ownLease: Lease): Promise<void> {
    const started: UserspaceWireGuard[] = [];
    try {
      for (const d of this.devices) {
        await d.start(ownLease);
        started.push(d);
      }
    } catch (err) {
      for (const d of started) await d.stop();
      throw err;
    }
  }

  handleRouteEvents(device: string, events: LeaseEvent[]): Promise<void> {
    return this.byName(device)?.handleRouteEvents(events) ?? Promise.resolve();
  }

  async setPeers(device: string, peers: WgPeerSpec[]): Promise<void> {
    this.byName(device)?.setPeers(peers);
  }

  async stop(): Promise<void> {
    for (const d of this.devices) await d.stop();
  }
}
