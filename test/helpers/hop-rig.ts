/**
 * A TUN device of a test's own in the current namespace (198.18.210-212.x
 * only, as native-tun.test.ts does), a hop's UDP socket and a peer socket
 * on 127.0.0.1, and hop.c handles over them: what native-hop*.test.ts
 * share.
 */
import { execFileSync, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import dgram from 'node:dgram';
import { loadNative, type HopHandle, type HopSpec, type NativeAddon, type WireGuardHopSpec } from '../../src/native/addon.js';
import { createRouteTableBuffer, RouteTableReader, RouteTableWriter, type RouteTableState } from '../../src/dataplane/routes.js';
import { acceptFromUdp, forwardFromTun, IcmpLimiter } from '../../src/dataplane/pipeline.js';
import { COUNTER_COUNT } from '../../src/dataplane/counters.js';
import { HOP_COUNTER_ORDER } from '../../src/dataplane/native-hop.js';
import { PacketBatch } from '../../src/tun/packet-batch.js';
import { TUN_OFFLOADS } from '../../src/tun/offload.js';

export const native: NativeAddon = loadNative();
const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
export const skip = !isRoot ? 'needs root' : !existsSync('/dev/net/tun') ? 'no /dev/net/tun' : typeof native.hopCreate !== 'function' ? 'addon without hop.c' : false;
const suffix = String(process.pid % 10000);

export const SLOT = 2048;
export const OWN = '198.18.210.0';
export const LOCAL = '198.18.210.1';
export const REMOTE = '198.18.211.0';
export const UNROUTED = '198.18.212.0';

export const ip = (s: string): number => s.split('.').reduce((a, o) => a * 256 + Number(o), 0) >>> 0;
export const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export function onesSum(b: Uint8Array, from: number, to: number, initial = 0): number {
  let s = initial;
  for (let i = from; i + 1 < to; i += 2) s += (b[i]! << 8) | b[i + 1]!;
  if ((to - from) & 1) s += b[to - 1]! << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/** An IPv4 packet around `l4` with a correct header checksum (ICMP echo when proto 1 and l4 is given as such). */
export function ipv4(src: string, dst: string, proto: number, l4: Uint8Array, o: { ttl?: number; badSum?: boolean; version?: number } = {}): Buffer {
  const p = Buffer.alloc(20 + l4.length);
  p[0] = ((o.version ?? 4) << 4) | 5;
  p.writeUInt16BE(p.length, 2);
  p.writeUInt16BE(0x4000, 6);
  p[8] = o.ttl ?? 64;
  p[9] = proto;
  p.writeUInt32BE(ip(src), 12);
  p.writeUInt32BE(ip(dst), 16);
  p.writeUInt16BE(~onesSum(p, 0, 20) & 0xffff, 10);
  if (o.badSum) p[10] ^= 0x55;
  p.set(l4, 20);
  return p;
}

export function echoRequest(id: number, seq: number): Buffer {
  const m = Buffer.alloc(16);
  m[0] = 8;
  m.writeUInt16BE(id, 4);
  m.writeUInt16BE(seq, 6);
  m.write('hop.c!!!', 8);
  m.writeUInt16BE(~onesSum(m, 0, m.length) & 0xffff, 2);
  return m;
}

export interface Rig {
  dev: string;
  tunFd: number;
  udpFd: number;
  udpPort: number;
  peer: dgram.Socket;
  peerPort: number;
  routes: SharedArrayBuffer;
  writer: RouteTableWriter;
  got: Buffer[];
}

export function table(peerPort: number, extra: RouteTableState['routes'] = []): RouteTableState {
  return {
    ownNet: ip(OWN),
    ownPrefixLen: 24,
    network: ip('198.18.208.0'),
    networkPrefixLen: 20,
    icmpSource: ip(LOCAL),
    routes: [{ net: ip(REMOTE), prefixLen: 24, peer: ip('127.0.0.1'), port: peerPort }, ...extra],
  };
}

export async function rig(vnet: boolean, name = 'hp'): Promise<Rig> {
  const dev = `ft${name}${vnet ? 'v' : 'p'}${suffix}`;
  const t = native.tunOpen(dev, false, vnet);
  if (vnet) native.tunSetOffload!(t.fd, TUN_OFFLOADS);
  sh('sysctl', ['-qw', `net.ipv6.conf.${dev}.disable_ipv6=1`]);
  sh('sysctl', ['-qw', `net.ipv4.conf.${dev}.rp_filter=0`]);
  sh('ip', ['addr', 'add', `${LOCAL}/32`, 'dev', dev]);
  sh('ip', ['link', 'set', dev, 'up']);
  sh('ip', ['route', 'add', `${REMOTE}/24`, 'dev', dev]);
  sh('ip', ['route', 'add', `${UNROUTED}/24`, 'dev', dev]);
  const udpFd = native.udpOpen('127.0.0.1', 0, false, false);
  const peer = dgram.createSocket('udp4');
  await new Promise<void>((r) => peer.bind(0, '127.0.0.1', r));
  const got: Buffer[] = [];
  peer.on('message', (m) => got.push(m));
  const routes = createRouteTableBuffer(16);
  const writer = new RouteTableWriter(routes);
  writer.publish(table(peer.address().port));
  return { dev, tunFd: t.fd, udpFd, udpPort: native.udpLocalPort(udpFd), peer, peerPort: peer.address().port, routes, writer, got };
}

export function teardown(r: Rig): void {
  r.peer.close();
  native.close(r.udpFd);
  native.close(r.tunFd);
  try {
    sh('ip', ['link', 'del', r.dev]);
  } catch {
    // closing the fd already removed it
  }
}

export interface Hop {
  handle: HopHandle;
  spec: HopSpec;
  counters: Float64Array;
  tx: PacketBatch;
  hdrs: Uint8Array | null;
  rx: PacketBatch;
  reply: PacketBatch;
  locks: Int32Array;
}

export function hop(r: Rig, vnet: boolean, o: { pathMtu?: number; locks?: boolean; wg?: WireGuardHopSpec; quietNs?: number } = {}): Hop {
  const tx = new PacketBatch(4, SLOT);
  const rx = new PacketBatch(8, SLOT);
  const reply = new PacketBatch(4, SLOT);
  const hdrs = vnet ? new Uint8Array(4 * 10) : null;
  const counters = new Float64Array(COUNTER_COUNT);
  const locks = new Int32Array(new SharedArrayBuffer(8));
  const spec: HopSpec = {
    tunFd: r.tunFd,
    udpFd: r.udpFd,
    pathMtu: o.pathMtu ?? 1400,
    maxLen: SLOT,
    // Every lone packet hops here (the daemon's HOP_QUIET_NS is tested on its own).
    quietNs: o.quietNs ?? 0,
    routes: new Uint32Array(r.routes),
    counters,
    counterIndexes: Int32Array.from(HOP_COUNTER_ORDER),
    locks: o.locks === false ? null : locks,
    queue: 0,
    vnetHdr: vnet,
    tx: { buf: tx.buf, slotSize: SLOT, lens: tx.lens, hdrs },
    rx: { buf: rx.buf, slotSize: SLOT, lens: rx.lens, addrs: rx.addrs, ports: rx.ports, gsoSizes: null, drops: new Uint32Array(1) },
    reply: { buf: reply.buf, slotSize: SLOT, lens: reply.lens, hdrs },
    overflowBase: 0,
    ...(o.wg ? { wg: o.wg } : {}),
  };
  return { handle: native.hopCreate!(spec), spec, counters, tx, hdrs, rx, reply, locks };
}

export async function sendFrom(addr: string, to: number, payload: Buffer): Promise<void> {
  const s = dgram.createSocket('udp4');
  try {
    await new Promise<void>((r) => s.bind(0, addr, r));
    await new Promise<void>((res, rej) => s.send(payload, to, '127.0.0.1', (e) => (e ? rej(e) : res())));
  } finally {
    s.close();
  }
}

/** Drain whatever the TUN queue holds (the kernel's own chatter, leftovers of a case). */
export function drainTun(r: Rig): void {
  const b = new PacketBatch(16, 65600);
  while (native.tunRead(r.tunFd, b.buf, b.slotSize, b.lens, 16, 0, new Uint8Array(160)) > 0);
}

/** What pipeline.ts does with datagram slot 0 of `h.rx`: 1 accepted, 0 dropped (on a copy, with fresh counters). */
export function jsAccepts(r: Rig, h: Hop): number {
  const b = new PacketBatch(1, SLOT);
  h.rx.buf.copy(b.buf, 0, 0, Math.min(h.rx.lens[0]!, SLOT));
  b.lens[0] = h.rx.lens[0]!;
  b.addrs[0] = h.rx.addrs[0]!;
  b.ports[0] = h.rx.ports[0]!;
  return acceptFromUdp(b, 1, new RouteTableReader(r.routes), new Float64Array(COUNTER_COUNT));
}

/** What pipeline.ts does with a packet read from TUN: 1 sent, 0 dropped. */
export function jsForwards(r: Rig, pkt: Buffer, pathMtu: number): number {
  const b = new PacketBatch(1, SLOT);
  pkt.copy(b.buf);
  b.lens[0] = pkt.length;
  return forwardFromTun(b, 1, new RouteTableReader(r.routes), new PacketBatch(4, 128), new IcmpLimiter(), new Float64Array(COUNTER_COUNT), pathMtu);
}

export async function waitGot(r: Rig, n: number): Promise<void> {
  for (let i = 0; i < 100 && r.got.length < n; i++) await sleep(10);
}

export function ping(dst: string, args: string[] = []): Promise<void> {
  return new Promise((res) => {
    const p = spawn('ping', ['-n', '-q', '-c', '1', '-W', '0.2', ...args, dst], { stdio: 'ignore' });
    p.on('exit', () => res());
  });
}

