/**
 * The seam between the routed packets and the datagrams on the wire, as
 * wireguard-go keeps peer lookup, crypto and sending apart: the packet
 * loops read TUN, route (pipeline.ts), hand the batch to an Encapsulation,
 * and send what it returns; on receive they hand received datagrams to it
 * before the per-packet checks. flannel's udp backend sends the bare inner
 * packet (PLAIN); an encrypting backend seals and opens here instead.
 */
import type { PacketBatch } from '../../tun/packet-batch.js';

export interface Encapsulation {
  /**
   * Turn routed inner packets in slots [0, n) of `batch` (addrs/ports set
   * to the peer) into datagrams, in place; returns how many to send
   * (compacted to the front).
   */
  seal(batch: PacketBatch, n: number): number;
  /**
   * Turn received datagrams in slots [0, n) (addrs/ports = their source)
   * into inner packets, in place; returns how many remain (compacted).
   */
  open(batch: PacketBatch, n: number): number;
  /**
   * Datagrams are the bare inner packets: the socket may then keep GSO runs
   * to one inner flow, for the receivers' inner-flow steering.
   */
  readonly bareInner: boolean;
}

/** flannel's wire format: the UDP payload is the inner IPv4 packet, unchanged. */
export const PLAIN: Encapsulation = {
  seal: (_batch, n) => n,
  open: (_batch, n) => n,
  bareInner: true,
};
