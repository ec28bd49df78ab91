/**
 * A batched UDP socket as the packet loops see it (the role of
 * wireguard-go's conn/): recvmmsg into a PacketBatch, sendmmsg (with UDP GSO
 * runs when asked) out of one. The fd is opened on the main thread and
 * wrapped again inside each packet worker.
 */
import type { NativeAddon } from '../native/addon.js';
import type { PacketBatch } from '../tun/packet-batch.js';

/** Open a non-blocking IPv4 UDP socket bound to bindAddr:port ("" = every address); returns its fd. */
export function openUdpSocket(addon: NativeAddon, bindAddr: string, port: number, reusePort = false): number {
  return addon.udpOpen(bindAddr, port, reusePort);
}

export class UdpSocket {
  constructor(
    private readonly addon: NativeAddon,
    readonly fd: number,
    /** Longest wait of one recv, in ms. */
    private readonly pollMs: number,
  ) {}

  /**
   * Receive up to batch.capacity datagrams into its slots (source address
   * and port in addrs/ports; lens[i] = slotSize + 1 for one cut short).
   * Returns how many arrived within pollMs (0 if none).
   */
  recv(batch: PacketBatch): number {
    return this.addon.udpRecv(this.fd, batch.buf, batch.slotSize, batch.lens, batch.addrs, batch.ports, batch.capacity, this.pollMs);
  }

  /**
   * Send slots [0, n) to addrs[i]:ports[i]; with `gso`, runs of equal-size
   * datagrams to one peer leave in one sendmsg (UDP_SEGMENT). Returns how
   * many left; the rest were dropped by the kernel.
   */
  send(batch: PacketBatch, n: number, gso: boolean): number {
    if (n === 0) return 0;
    return this.addon.udpSend(this.fd, batch.buf, batch.slotSize, batch.lens, batch.addrs, batch.ports, n, gso);
  }
}
