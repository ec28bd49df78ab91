/**
 * A batched UDP socket as the packet loops see it (the role of
 * wireguard-go's conn/): recvmmsg into a PacketBatch, sendmmsg (with UDP GSO
 * runs when asked) out of one. The fd is opened on the main thread and
 * wrapped again inside each packet worker.
 *
 * With UDP GRO (`gro`), the kernel may hand over a run of datagrams of one
 * flow as one super-datagram: this happens whenever the sender used UDP GSO
 * and nothing on the way split it (veth, bridges), and after GRO on a NIC.
 * One recvmmsg slot then holds up to 64 KB; `recv` cuts those into the
 * caller's slots, one datagram each, so the caller never sees the
 * difference. What does not fit the caller's batch is kept for the next
 * call, which then returns without a syscall.
 */
import type { HopUdpSlots, NativeAddon } from '../native/addon.js';
import { PacketBatch } from '../tun/packet-batch.js';

/** Open a non-blocking UDP socket bound to bindAddr:port ("" = every IPv4 address; an IPv6 address opens an IPv6-only socket); returns its fd. */
export function openUdpSocket(addon: NativeAddon, bindAddr: string, port: number, reusePort = false, dualStack = false): number {
  return addon.udpOpen(bindAddr, port, reusePort, dualStack);
}

/** Turn UDP GRO on for fd; false when the kernel (or a fake addon) has none. */
export function enableUdpGro(addon: NativeAddon, fd: number): boolean {
  return typeof addon.udpSetGro === 'function' && addon.udpSetGro(fd);
}

/** Slot of a GRO super-datagram: the largest UDP payload (the IP total length is 16 bits) and the byte that detects truncation. */
const GRO_SLOT = 65536;
/** Super-datagrams per recvmmsg with GRO: 16 x 64 KB holds more datagrams than any caller's batch takes. */
const GRO_STAGING = 16;

/** What the last recv() did. */
export interface UdpRecvCounts {
  /** recvmmsg calls that returned datagrams (0 when served from held super-datagrams). */
  syscalls: number;
  /** GRO super-datagrams (more than one datagram in a slot) cut this call. */
  superDatagrams: number;
  /** Datagrams those super-datagrams held. */
  segments: number;
}

export interface UdpSocketOptions {
  /** UDP_GRO is on for the fd (enableUdpGro): cut super-datagrams. */
  gro?: boolean;
  /**
   * The fd is an IPv6 socket and addrs name endpoints by id, the index of
   * their address in this table (dataplane/endpoints6.ts); received
   * datagrams report their sources in batch.sources6.
   */
  endpoints6?: Uint8Array;
}

export class UdpSocket {
  readonly gro: boolean;
  private readonly endpoints6: Uint8Array | null;
  readonly recvCounts: UdpRecvCounts = { syscalls: 0, superDatagrams: 0, segments: 0 };
  /** The socket's cumulative receive-buffer overflow count as the kernel last reported it (SO_RXQ_OVFL). */
  readonly drops = new Uint32Array(1);
  private readonly staging: PacketBatch | null;
  private readonly gsoSizes: Uint16Array | null;
  // Held super-datagrams: staging slots [pendingFrom, pendingCount), the first cut up to byte pendingOffset.
  private pendingFrom = 0;
  private pendingCount = 0;
  private pendingOffset = 0;
  /** Datagrams a receive of hop.c left in the receive slots (adopt): the next recv() hands them out. */
  private adopted = 0;

  constructor(
    private readonly addon: NativeAddon,
    readonly fd: number,
    /** Longest wait of one recv, in ms. */
    private readonly pollMs: number,
    opts: UdpSocketOptions = {},
  ) {
    this.endpoints6 = opts.endpoints6 ?? null;
    this.gro = opts.gro === true;
    this.staging = this.gro ? new PacketBatch(GRO_STAGING, GRO_SLOT) : null;
    // On an IPv6 socket every piece of a super-datagram carries its 16-byte source along.
    if (this.staging && this.endpoints6) this.staging.sources6 = new Uint8Array(16 * GRO_STAGING);
    this.gsoSizes = this.gro ? new Uint16Array(GRO_STAGING) : null;
  }

  /**
   * Receive up to batch.capacity datagrams into its slots (source address
   * and port in addrs/ports; lens[i] = slotSize + 1 for one cut short).
   * Returns how many arrived within timeoutMs (0 if none).
   */
  recv(batch: PacketBatch, timeoutMs = this.pollMs): number {
    const c = this.recvCounts;
    c.syscalls = c.superDatagrams = c.segments = 0;
    const st = this.staging;
    if (this.adopted > 0) {
      const k = this.adopted;
      this.adopted = 0;
      c.syscalls = 1;
      if (st === null) return k;
      this.pendingFrom = this.pendingOffset = 0;
      this.pendingCount = k;
    }
    if (st === null) {
      if (this.endpoints6 && !batch.sources6) batch.sources6 = new Uint8Array(16 * batch.capacity);
      const n = this.addon.udpRecv(this.fd, batch.buf, batch.slotSize, batch.lens, batch.addrs, batch.ports, batch.capacity, timeoutMs, null, this.drops, batch.sources6);
      if (n > 0) c.syscalls = 1;
      return n;
    }
    if (this.pendingFrom >= this.pendingCount) {
      this.pendingFrom = this.pendingOffset = 0;
      this.pendingCount = this.addon.udpRecv(this.fd, st.buf, GRO_SLOT, st.lens, st.addrs, st.ports, GRO_STAGING, timeoutMs, this.gsoSizes, this.drops, st.sources6);
      if (this.pendingCount === 0) return 0;
      c.syscalls = 1;
    }
    return this.cut(batch);
  }

  /**
   * The slots a receive lands in, for hop.c to receive into: the GRO
   * staging slots with GRO, else the caller's batch (the one it then
   * passes to recv()). IPv4 sockets only.
   */
  receiveSlots(batch: PacketBatch): HopUdpSlots {
    const st = this.staging;
    const b = st ?? batch;
    return { buf: b.buf, slotSize: b.slotSize, lens: b.lens, addrs: b.addrs, ports: b.ports, gsoSizes: st ? this.gsoSizes : null, drops: this.drops };
  }

  /** Received datagrams not all handed out yet (held super-datagrams, or ones adopted): the next recv() returns at once. */
  get hasPending(): boolean {
    return this.adopted > 0 || this.pendingFrom < this.pendingCount;
  }

  /** hop.c received n datagrams into receiveSlots(): the next recv() hands them out as if it had received them. */
  adopt(n: number): void {
    this.adopted = n;
  }

  /** Cut held super-datagrams into the caller's slots until either runs out. */
  private cut(batch: PacketBatch): number {
    const st = this.staging!;
    const gso = this.gsoSizes!;
    const c = this.recvCounts;
    const { buf: out, lens: outLens, addrs, ports, slotSize, capacity } = batch;
    const src6 = st.sources6;
    if (src6 && !batch.sources6) batch.sources6 = new Uint8Array(16 * capacity);
    const out6 = batch.sources6;
    let k = 0;
    while (this.pendingFrom < this.pendingCount && k < capacity) {
      const i = this.pendingFrom;
      const len = st.lens[i]!;
      const base = i * GRO_SLOT;
      if (len > GRO_SLOT) {
        // Truncated even in a 64 KB slot: pass on as one truncated datagram for the caller to count.
        outLens[k] = slotSize + 1;
        addrs[k] = st.addrs[i]!;
        ports[k] = st.ports[i]!;
        if (src6) out6!.set(src6.subarray(16 * i, 16 * i + 16), 16 * k);
        k++;
        this.pendingFrom++;
        continue;
      }
      const seg = gso[i]! > 0 ? gso[i]! : Math.max(len, 1);
      if (this.pendingOffset === 0 && len > seg) {
        c.superDatagrams += 1;
        c.segments += Math.ceil(len / seg);
      }
      // Each piece of a super-datagram is one datagram of the sender (the last may be shorter); an empty datagram is one piece.
      do {
        const at = this.pendingOffset;
        const l = Math.min(seg, len - at);
        if (l > slotSize) outLens[k] = slotSize + 1;
        else {
          st.buf.copy(out, k * slotSize, base + at, base + at + l);
          outLens[k] = l;
        }
        addrs[k] = st.addrs[i]!;
        ports[k] = st.ports[i]!;
        if (src6) out6!.set(src6.subarray(16 * i, 16 * i + 16), 16 * k);
        k++;
        this.pendingOffset = at + l;
      } while (this.pendingOffset < len && k < capacity);
      if (this.pendingOffset >= len) {
        this.pendingFrom++;
        this.pendingOffset = 0;
      }
    }
    batch.count = k;
    return k;
  }

  /**
   * Send slots [0, n) to addrs[i]:ports[i]; with `gso`, runs of equal-size
   * datagrams to one peer leave in one sendmsg (UDP_SEGMENT), with
   * `flowRuns` (bare inner packets) only runs of one inner flow. Returns
   * how many left; the rest were dropped by the kernel.
   */
  send(batch: PacketBatch, n: number, gso: boolean, flowRuns = false): number {
    if (n === 0) return 0;
    return this.addon.udpSend(this.fd, batch.buf, batch.slotSize, batch.lens, batch.addrs, batch.ports, n, gso, flowRuns, this.endpoints6);
  }
}
