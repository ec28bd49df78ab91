/**
 * The slot layout every batched I/O call of the native addon uses: packets
 * in fixed-size slots of one buffer (packet i at i * slotSize), lengths,
 * and for datagrams the peer address and port, in typed arrays beside it.
 */
export class PacketBatch {
  readonly buf: Buffer;
  readonly lens: Uint32Array;
  readonly addrs: Uint32Array;
  readonly ports: Uint16Array;
  /** Packets currently held (slots 0..count-1). */
  count = 0;
  /**
   * Datagrams received on an IPv6 socket: each slot's source address (16
   * bytes at 16 * i), which its u32 in addrs cannot hold. Null otherwise.
   */
  sources6: Uint8Array | null = null;

  constructor(
    readonly capacity: number,
    readonly slotSize: number,
  ) {
    this.buf = Buffer.alloc(capacity * slotSize);
    this.lens = new Uint32Array(capacity);
    this.addrs = new Uint32Array(capacity);
    this.ports = new Uint16Array(capacity);
  }

  /** Move slot `from`'s packet, length, address and port to slot `to` (compacting after a drop). */
  moveSlot(from: number, to: number): void {
    const len = this.lens[from]!;
    this.buf.copyWithin(to * this.slotSize, from * this.slotSize, from * this.slotSize + len);
    this.lens[to] = len;
    this.addrs[to] = this.addrs[from]!;
    this.ports[to] = this.ports[from]!;
  }
}
