/**
 * Typed loader for the N-API addon in native/ (built by `npm ci`).
 *
 * Contract shared by every caller: packets live in one Buffer split into
 * fixed-size slots (packet i starts at i * slotSize); lengths travel in a
 * Uint32Array beside it. Each call moves a whole batch. Calls that wait use
 * poll() with a timeout so a worker thread can notice a stop request.
 * Errors are thrown as JS Errors with `code` set to the errno name
 * (EPERM, ENOENT, EBUSY, ...), `errno` (negative, like Node's), `syscall`,
 * and a message saying what to do. Bad arguments (wrong types, a buffer too
 * small for max * slotSize, short lens/addrs/ports, lens[i] > slotSize)
 * throw TypeError/RangeError before any syscall. Every call is synchronous
 * and may be used from several worker_threads at once (the addon is
 * context-aware).
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export interface NativeAddon {
  /**
   * Open /dev/net/tun and attach to (or create) device `name` with
   * IFF_TUN | IFF_NO_PI (| IFF_MULTI_QUEUE when multiQueue). Non-blocking,
   * close-on-exec fd. `name` is at most 15 bytes; "" lets the kernel pick
   * (tunN), and the returned `name` is the real one. Call again with
   * multiQueue=true to add queues. Errors: EBUSY (single-queue device already
   * open), EINVAL (exists with other flags / not a TUN), EPERM, ENOENT.
   */
  tunOpen(name: string, multiQueue: boolean, vnetHdr?: boolean): { fd: number; name: string };
  /**
   * ioctl(TUNSETOFFLOAD) with TUN_F_* flags (see TUN_F in src/tun/offload.ts) on a
   * TUN opened with vnetHdr: the kernel may then hand us TSO super-packets
   * and packets with a partial checksum. EINVAL: the kernel refuses.
   */
  tunSetOffload(fd: number, flags: number): void;
  /**
   * Read up to `max` packets from the TUN fd into slots of `buf`, writing
   * lengths into `lens`. Waits up to timeoutMs (>= 0; 0 = don't wait) for the
   * first packet, then drains without waiting. Returns the number of packets
   * (0 on timeout). A packet longer than slotSize is cut and reported as
   * lens[i] = slotSize + 1 (drop it). Throws EBADFD once the device is gone.
   * `hdrs` (>= max * 10 bytes) is required for a TUN opened with vnetHdr:
   * packet i's virtio_net_hdr goes to hdrs[i * 10 ..], the IP packet to its
   * slot as usual (lens[i] = 0 for a read shorter than the header).
   */
  tunRead(fd: number, buf: Buffer, slotSize: number, lens: Uint32Array, max: number, timeoutMs: number, hdrs?: Uint8Array | null): number;
  /**
   * Write `count` packets (slots of buf, lengths in lens, each <= slotSize).
   * Returns packets written: a full queue gets one ~10 ms poll, then packets
   * are dropped; a packet the kernel rejects is dropped alone. Only fd-level
   * errors (EBADF, EBADFD) throw, and only if nothing was written.
   * For a vnetHdr TUN, `hdrs` (>= count * 10 bytes) holds each packet's
   * virtio_net_hdr (all zero for a plain packet), written in front of it.
   * With `segs` (>= count entries) the return value counts segs[i] for each
   * slot written instead of 1 (a coalesced super-packet carries segs[i]
   * received packets), so drops can be accounted per received packet.
   */
  tunWrite(fd: number, buf: Buffer, slotSize: number, lens: Uint32Array, count: number, hdrs?: Uint8Array | null, segs?: Uint32Array | null): number;
  /**
   * A non-blocking UDP socket bound to bindAddr:port ("" = 0.0.0.0, port
   * 0 = any; an IPv6 address such as "::" makes an IPv6-only socket),
   * SO_REUSEPORT when reusePort, 4 MiB socket buffers. No
   * SO_REUSEADDR on purpose, so a port held by another process (a second
   * flanneld) fails with EADDRINUSE instead of silently sharing it.
   */
  udpOpen(bindAddr: string, port: number, reusePort: boolean, /** With "::": IPv4 too (peers as ::ffff:a.b.c.d). */ dualStack?: boolean): number;
  /**
   * recvmmsg up to `max` datagrams into slots; lens[i] = length (slotSize + 1
   * when the datagram was truncated), addrs[i] = source IPv4 as u32 (host
   * order), ports[i] = source port. Waits up to timeoutMs (>= 0) for the
   * first. max <= 1024 (UIO_MAXIOV).
   */
  udpRecv(
    fd: number,
    buf: Buffer,
    slotSize: number,
    lens: Uint32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    max: number,
    timeoutMs: number,
    /** With UDP_GRO on (udpSetGro): gsoSizes[i] = segment size of the super-datagram in slot i, 0 for a single one. */
    gsoSizes?: Uint16Array | null,
    /** drops[0] = the socket's cumulative count of datagrams dropped for want of buffer space (SO_RXQ_OVFL), when a datagram carried it. */
    drops?: Uint32Array | null,
    /** On an IPv6 socket: 16 bytes per slot, the datagram's source address (addrs[i] is then 0). */
    sources6?: Uint8Array | null,
  ): number;
  /**
   * sendmmsg `count` (<= 1024) datagrams to addrs[i]:ports[i] (u32 host
   * order). Returns datagrams sent; as for tunWrite, a full socket buffer
   * gets a short poll before the rest is dropped, a datagram the kernel
   * rejects (EMSGSIZE, ENETUNREACH, port 0, ...) is dropped alone, and only
   * fd-level errors throw. With `gso`, runs of consecutive datagrams to the
   * same address:port with equal lengths (the last of a run may be shorter;
   * at most 64 per run) leave in one sendmsg with UDP_SEGMENT; the wire
   * still sees one ordinary datagram per slot. A run the kernel refuses is
   * resent datagram by datagram. With `flowRuns` (slots hold bare inner
   * IPv4 packets), a run also keeps to one inner flow (protocol, addresses,
   * ports), because a GRO receiver steers a run as one (udpSteerByInnerFlow).
   * With `endpoints6` the socket is IPv6 and addrs[i] is an endpoint id: the
   * destination is the 16 bytes at endpoints6[16 * id] (an id beyond the
   * table throws: ids come from our own tables).
   */
  udpSend(
    fd: number,
    buf: Buffer,
    slotSize: number,
    lens: Uint32Array,
    addrs: Uint32Array,
    ports: Uint16Array,
    count: number,
    gso?: boolean,
    flowRuns?: boolean,
    endpoints6?: Uint8Array | null,
  ): number;
  /** Local port of a bound socket (for port 0 binds in tests). */
  udpLocalPort(fd: number): number;
  /**
   * setsockopt(UDP_GRO): runs of datagrams of one flow may then arrive as one
   * super-datagram (up to 64 KB) in one recvmmsg slot, cut by the gsoSizes
   * udpRecv reports. false when the kernel lacks UDP_GRO.
   */
  udpSetGro?(fd: number): boolean;
  /**
   * Attach the inner-flow steering program to the SO_REUSEPORT group of fd
   * (groupSize sockets): each datagram goes to socket hash(inner protocol,
   * addresses, ports) % groupSize, in the order the sockets were bound.
   */
  udpSteerByInnerFlow?(fd: number, groupSize: number): void;
  /**
   * Attach the queue-steering eBPF program to the multi-queue TUN device
   * of fd: every packet the kernel sends into it goes to queue
   * hash(IPv4 protocol, addresses, ports) % queues, from a flow's first
   * packet on (instead of the kernel's learned choice, which can move a
   * running flow). Throws when the kernel refuses (no TUNSETSTEERINGEBPF).
   */
  tunSteerByInnerFlow?(fd: number): void;
  /**
   * sums[i] = RFC 1071 one's-complement sum (folded, not inverted, as
   * big-endian 16-bit words, like ipv4.ts onesSum) of bytes [start, lens[i])
   * of slot i; 0 when lens[i] <= start or lens[i] > slotSize. No syscall.
   */
  sumSlots(buf: Buffer, slotSize: number, lens: Uint32Array, count: number, start: number, sums: Uint16Array): void;
  /**
   * WireGuard transport seal, in place: slot i's inner packet (lens[i]
   * bytes) becomes [4,0,0,0 | receivers[i] LE | counters[i] LE |
   * ChaCha20-Poly1305 under keys[32*keyIdx[i]..] of the packet zero-padded
   * to 16 | tag]; lens[i] = its length, 0 when it does not fit the slot or
   * keyIdx[i] is out of range. Returns how many were sealed. No syscall.
   */
  wgSeal(
    buf: Buffer,
    slotSize: number,
    lens: Uint32Array,
    count: number,
    keys: Uint8Array,
    keyIdx: Uint32Array,
    receivers: Uint32Array,
    counters: BigUint64Array,
    /** The device MTU: padding to 16 bytes stops there (WireGuard's rule); 0 or absent: no cap. */
    mtu?: number,
  ): number;
  /**
   * WireGuard transport open, in place: slot i's message (lens[i] bytes) is
   * authenticated and decrypted under keys[32*keyIdx[i]..] with the counter
   * of its header, the plaintext moved to the slot's start and lens[i] set
   * to its length (padding included; 0 for a keepalive). Failure (bad tag,
   * too short, keyIdx out of range): lens[i] = 0xffffffff. Returns how many
   * opened. No syscall.
   */
  wgOpen(buf: Buffer, slotSize: number, lens: Uint32Array, count: number, keys: Uint8Array, keyIdx: Uint32Array): number;
  /**
   * flock(fd, LOCK_EX | LOCK_NB): true when this open file description now
   * holds the exclusive lock, false when another one holds it. close() (or
   * the holder's death) releases it.
   */
  tryLockExclusive(fd: number): boolean;
  /** close(2); throws EBADF on a double close. */
  close(fd: number): void;
  /** poll(2) for POLLIN without reading: true when readable within timeoutMs. */
  waitReadable?(fd: number, timeoutMs: number): boolean;
  /**
   * The udp backend's lone-packet hops (native/hop.c): a handle over the
   * worker's fds, read slots, route table, counters and read lock, kept
   * for the worker's life (dataplane/native-hop.ts builds the spec and
   * keeps every array alive beside it).
   */
  hopCreate?(spec: HopSpec): HopHandle;
  /**
   * Wait up to timeoutMs, read TUN, forward one lone packet in C. 0: done
   * (or nothing came); n > 0: n packets read into the tx slots for
   * TypeScript, the queue's read lock held; -1: readable but locked.
   */
  hopTx?(hop: HopHandle, timeoutMs: number): number;
  /**
   * Wait up to timeoutMs, receive, deliver one lone datagram in C (and
   * send what the kernel answered). 0: done (or nothing came); n > 0: n
   * datagrams received into the rx slots for TypeScript; n < 0: -n
   * answers read into the reply slots for TypeScript, the read lock held.
   */
  hopRx?(hop: HopHandle, timeoutMs: number): number;
}

/** Opaque handle of hopCreate. */
export type HopHandle = { readonly __hop: unique symbol };

/** Slots a TUN read of hop.c lands in: TunDevice's own (hdrs with offloads). */
export interface HopTunSlots {
  buf: Uint8Array;
  slotSize: number;
  lens: Uint32Array;
  hdrs: Uint8Array | null;
}

/** Slots a receive of hop.c lands in: UdpSocket's own (its GRO staging with gsoSizes). */
export interface HopUdpSlots {
  buf: Uint8Array;
  slotSize: number;
  lens: Uint32Array;
  addrs: Uint32Array;
  ports: Uint16Array;
  gsoSizes: Uint16Array | null;
  drops: Uint32Array;
}

export interface HopSpec {
  tunFd: number;
  udpFd: number;
  pathMtu: number;
  /** The worker's slotSize: longer packets are TypeScript's to drop. */
  maxLen: number;
  /** A lone packet hops in C only when the worker saw none for this long before it (ns; 0: always). */
  quietNs: number;
  /** The shared route table (dataplane/routes.ts), read live under its sequence counter. */
  routes: Uint32Array;
  /** The worker's counter region, and which of its slots hop.c adds to (native-hop.ts lists them). */
  counters: Float64Array;
  counterIndexes: Int32Array;
  /** The queue read locks (QueueReadLock's words); null when the queue's reads are not shared. */
  locks: Int32Array | null;
  queue: number;
  /** The TUN fd has IFF_VNET_HDR (offloads): writes carry a virtio_net_hdr. */
  vnetHdr: boolean;
  /** Where hopTx reads (the tx worker); null for an rx worker's hop. */
  tx: HopTunSlots | null;
  /** Where hopRx receives (the rx worker); null for a tx worker's hop. */
  rx: HopUdpSlots | null;
  /** Where hopRx reads what the kernel answered (the rx worker sharing the queue's reads), else null. */
  reply: HopTunSlots | null;
  /** rxSocketOverflow = overflowBase + drops[0], as UdpToTun sets it. */
  overflowBase: number;
  /** WireGuard's transport (wireguard/transport.ts nativeHop); absent: flannel's plain encapsulation. */
  wg?: WireGuardHopSpec | null;
}

/** The shared WireGuard state native/hop_wg.c seals and opens with. */
export interface WireGuardHopSpec {
  /** peer-table.ts nativeLayout. */
  layout: Int32Array;
  /** WgCounter slots: sealed, opened, keepalives, bad mac, keypair gone, replay, roamed, too big. */
  counterIndexes: Int32Array;
  keypairs: Int32Array;
  created: Float64Array;
  sendCounters: Uint32Array;
  sendKeys: Uint8Array;
  recvKeys: Uint8Array;
  peers: Int32Array;
  times: Float64Array;
  /** The worker's WireGuard counter region. */
  stats: Float64Array;
  /** replay.ts ReplayWindows of this worker. */
  replayBits: Uint32Array;
  replayTop: Float64Array;
  replayGen: Int32Array;
  mtu: number;
  rekeyAfterMs: number;
  rejectAfterMs: number;
  clockOffsetMs: number;
  counterLimit: number;
}

let cached: NativeAddon | null = null;

export function loadNative(): NativeAddon {
  if (cached) return cached;
  const require = createRequire(import.meta.url);
  // dist/src/native -> repo root
  const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
  try {
    cached = require(join(root, 'native', 'build', 'Release', 'flannel_native.node')) as NativeAddon;
  } catch (err) {
    throw new Error(`native addon not built (run "npm ci" or "npm run install"): ${(err as Error).message}`);
  }
  return cached;
}
