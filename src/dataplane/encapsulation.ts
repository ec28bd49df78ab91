/**
 * The seam between the routed packets and the datagrams on the wire, as
 * wireguard-go keeps peer lookup, crypto and sending apart: the packet
 * loops read TUN, route (pipeline.ts), hand the batch to an Encapsulation,
 * and send what it returns; on receive they hand received datagrams to it
 * before the per-packet checks. flannel's udp backend sends the bare inner
 * packet (PLAIN); an encrypting backend seals and opens here instead.
 *
 * Peers are named by ids the encapsulation chooses (the routes carry them):
 * seal turns a peer id into the endpoint to send to, open turns a datagram
 * into the id of the peer that sent it, and the source checks that follow
 * accept only inner sources inside that peer's subnets. PLAIN's id is the
 * endpoint itself; WireGuard's is the slot of the key that opened the
 * packet. An encapsulation is loaded inside each worker from its module
 * (EncapsulationSpec), so this folder never imports one.
 */
import type { NativeAddon, WireGuardHopSpec } from '../native/addon.js';
import type { PacketBatch } from '../tun/packet-batch.js';

export interface Encapsulation {
  /**
   * Turn routed inner packets in slots [0, n) of `batch` (addrs = the
   * route's peer id, ports = the route's port) into datagrams to the peers'
   * endpoints (addrs/ports rewritten), in place; returns how many to send
   * (compacted to the front).
   */
  seal(batch: PacketBatch, n: number): number;
  /**
   * Turn received datagrams in slots [0, n) (addrs/ports = their source)
   * into inner packets, in place, addrs = the id of the peer that sent each
   * (what the source check judges it by); returns how many remain
   * (compacted).
   */
  open(batch: PacketBatch, n: number): number;
  /**
   * Datagrams are the bare inner packets: the socket may then keep GSO runs
   * to one inner flow, for the receivers' inner-flow steering.
   */
  readonly bareInner: boolean;
  /**
   * What native/hop.c needs to seal and open lone packets itself as this
   * encapsulation does (hopCreate's spec.wg), or null when it cannot.
   * Absent: the hops cannot take this encapsulation (PLAIN is theirs).
   */
  nativeHop?(): WireGuardHopSpec | null;
}

/** flannel's wire format: the UDP payload is the inner IPv4 packet, unchanged. */
export const PLAIN: Encapsulation = {
  seal: (_batch, n) => n,
  open: (_batch, n) => n,
  bareInner: true,
};

/**
 * An encapsulation for the packet workers: the module (a URL) exports
 * `createEncapsulation(addon, config, env)`, called once in each worker;
 * `config` is structured-cloned to it (SharedArrayBuffers stay shared).
 */
export interface EncapsulationSpec {
  module: string;
  config: unknown;
}

/** What a worker tells the encapsulation it creates. */
export interface EncapsulationEnv {
  role: 'tx' | 'rx';
  /** The endpoint table the socket's ids name (IPv6 sockets). */
  endpoints6: Uint8Array | null;
  /** Post a message to the main thread (the dataplane's onEncapMessage). Rare events only. */
  post(msg: unknown): void;
}

export type EncapsulationFactory = (addon: NativeAddon, config: unknown, env: EncapsulationEnv) => Encapsulation;
