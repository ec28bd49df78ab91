/**
 * The main-thread half of our userspace WireGuard: the peers, their
 * handshakes and timers (whitepaper section 6), and what the packet workers
 * need published in the shared PeerTable. The workers hand every handshake
 * datagram here and move transport packets themselves; this side sends
 * handshake messages, cookie replies and keepalives on the same UDP socket.
 *
 * Keypairs per peer, as wireguard-go keeps them: `current` (sending),
 * `previous` (still received during a rekey) and `next` (a responder's new
 * keypair, used for sending once the initiator has sent with it).
 */
import type { Logger } from '../log.js';
import type { NativeAddon } from '../native/addon.js';
import { PacketBatch } from '../tun/packet-batch.js';
import { CookieChecker, CookieGenerator, ipv4Source, ipv6Source } from './cookie.js';
import { consumeInitiation, consumeResponse, createInitiation, createResponse, timestampNewer, type Identity, type InitiatorState } from './noise.js';
import { publicKeyOf } from './primitives.js';
import { INITIATION_MIN_INTERVAL, KEEPALIVE_TIMEOUT, MessageType, REJECT_AFTER_TIME, REKEY_ATTEMPT_TIME, REKEY_TIMEOUT, Resp, Cookie } from './messages.js';
import { KeypairFlag, NO_KEYPAIR, PeerTable, SentBytesBy } from './peer-table.js';
import { WgCounter } from './counters.js';
import { randomBytes } from 'node:crypto';
import { IPV4_ENDPOINTS, type EndpointCodec, type UapiDevice, type UapiPeer } from './uapi.js';
import { SourceRateLimiter, sourceKey6 } from './ratelimiter.js';
import { monotonicMs } from './clock.js';
import { slotOfIndex } from './peer-table.js';

export interface PeerConfig {
  publicKey: Buffer;
  addr: number;
  port: number;
  psk: Buffer | null;
  /** Persistent keepalive interval in ms; 0 = off. */
  keepaliveMs: number;
  /** Allowed IPs, for `wg show` (routing itself is the route table's). */
  allowedIPs: string[];
}

interface Pending {
  state: InitiatorState;
  slot: number;
  sentMs: number;
  firstMs: number;
}

interface Peer {
  slot: number;
  cfg: PeerConfig;
  cookies: CookieGenerator;
  pending: Pending | null;
  lastTimestamp: Buffer | null;
  lastInitiationMs: number;
  lastHandshakeMs: number;
  /** The data-send time the "no reply" rule last fired for: it fires once per send, as wireguard-go's timer. */
  noReplyFiredFor: number;
  /** The receive time the "old keypair" rule last fired for (it fires on a receive, once). */
  oldKeyFiredFor: number;
}

export interface DeviceOptions {
  privateKey: Buffer;
  table: PeerTable;
  /** The main thread's counter region. */
  stats: Float64Array;
  /**
   * The dataplane's addon and UDP socket (it changes when the dataplane
   * restarts; null while down); on an IPv6 socket the endpoint table that
   * peer addresses are ids into (dataplane/endpoints6.ts).
   */
  socket: () => { addon: NativeAddon; fd: number; endpoints6?: Uint8Array } | null;
  /** How peer addresses are written and read by `wg` (default IPv4). */
  endpoints?: EndpointCodec;
  log: Logger;
  listenPort: number;
  /** The endpoint a peer roams to, for `addr` as a source names it (IPv6 sockets: a transient id becomes a held one). */
  pinEndpoint?: (addr: number) => number;
  /** Monotonic ms (clock.ts); tests step it. */
  now?: () => number;
}

/** More handshake messages than this in one second: answer with cookies instead of DH work. */
export const UNDER_LOAD_PER_SECOND = 100;
/** A freed keypair slot keeps its keys this long before they are erased and the slot reused, so no worker's batch still uses it. */
const QUARANTINE_MS = 5000;

export class WireGuardDevice implements UapiDevice {
  readonly id: Identity;
  private readonly checker: CookieChecker;
  private readonly peers_ = new Map<string, Peer>();
  private readonly byPendingIndex = new Map<number, Peer>();
  /** Peers by their slot in the table (what the workers and the keypairs name them by). */
  private readonly bySlot = new Map<number, Peer>();
  private readonly freePeerSlots: number[] = [];
  private readonly freeKeypairs: number[] = [];
  private readonly quarantine: { slot: number; since: number }[] = [];
  private readonly scratch = new PacketBatch(1, 256);
  private loadSecond = 0;
  private loadCount = 0;
  private readonly now: () => number;
  /** Under load, mac2-valid handshakes per source (wireguard-go's ratelimiter): each costs two X25519 here. */
  private readonly limiter = new SourceRateLimiter();

  constructor(private readonly opts: DeviceOptions) {
    this.id = { staticPrivate: opts.privateKey, staticPublic: publicKeyOf(opts.privateKey) };
    this.checker = new CookieChecker(this.id.staticPublic);
    this.now = opts.now ?? monotonicMs;
    for (let s = opts.table.peerCapacity - 1; s >= 0; s--) this.freePeerSlots.push(s);
    for (let k = opts.table.keypairCapacity - 1; k >= 0; k--) this.freeKeypairs.push(k);
  }

  get publicKey(): Buffer {
    return this.id.staticPublic;
  }

  /** Make the peer set exactly `configs` (by public key); a changed endpoint or PSK is updated in place. */
  setPeers(configs: PeerConfig[]): void {
    const want = new Map(configs.map((c) => [c.publicKey.toString('hex'), c]));
    for (const [hex, peer] of this.peers_) if (!want.has(hex)) this.removePeer(hex, peer);
    for (const [hex, cfg] of want) {
      const peer = this.peers_.get(hex);
      if (peer) {
        // Only a changed lease endpoint resets the endpoint: one roamed to (an authenticated source) stays meanwhile.
        if (peer.cfg.addr !== cfg.addr || peer.cfg.port !== cfg.port) this.opts.table.setEndpoint(peer.slot, cfg.addr, cfg.port);
        peer.cfg = cfg;
        continue;
      }
      const slot = this.freePeerSlots.pop();
      if (slot === undefined) {
        this.opts.log.error('too many WireGuard peers; ignoring one', { capacity: this.opts.table.peerCapacity });
        continue;
      }
      this.opts.table.setPeer(slot, cfg.addr, cfg.port, false);
      this.opts.table.setPeer(slot, cfg.addr, cfg.port, true);
      const added: Peer = { slot, cfg, cookies: new CookieGenerator(cfg.publicKey), pending: null, lastTimestamp: null, lastInitiationMs: 0, lastHandshakeMs: 0, noReplyFiredFor: 0, oldKeyFiredFor: 0 };
      this.peers_.set(hex, added);
      this.bySlot.set(slot, added);
    }
    this.opts.table.bump();
  }

  private removePeer(hex: string, peer: Peer): void {
    const t = this.opts.table;
    const held = this.keypairsOf(peer);
    t.setPeer(peer.slot, 0, 0, false);
    this.releaseKeypairs(peer, held);
    this.peers_.delete(hex);
    this.bySlot.delete(peer.slot);
    // Reused last: a route table still naming the slot until its next publish must not reach a new peer.
    this.freePeerSlots.unshift(peer.slot);
  }

  // ---- keypair slots ----
  private allocKeypair(): number | null {
    const now = this.now();
    while (this.quarantine.length > 0 && now - this.quarantine[0]!.since >= QUARANTINE_MS) {
      const k = this.quarantine.shift()!.slot;
      this.opts.table.eraseKeys(k);
      this.freeKeypairs.push(k);
    }
    return this.freeKeypairs.pop() ?? null;
  }

  private freeKeypair(k: number): void {
    if (k === NO_KEYPAIR) return;
    this.opts.table.clearKeypair(k);
    this.quarantine.push({ slot: k, since: this.now() });
  }

  private newIndex(slot: number): number {
    // Low 16 bits: the slot (the rx worker's lookup); high 16 bits random, so indexes are not guessable.
    return ((randomBytes(2).readUInt16LE(0) << 16) | slot) >>> 0;
  }

  // ---- sending ----
  private sendRaw(msg: Buffer, addr: number, port: number): void {
    const sock = this.opts.socket();
    if (!sock) return;
    const b = this.scratch;
    msg.copy(b.buf, 0);
    b.lens[0] = msg.length;
    b.addrs[0] = addr;
    b.ports[0] = port;
    sock.addon.udpSend(sock.fd, b.buf, b.slotSize, b.lens, b.addrs, b.ports, 1, false, false, sock.endpoints6);
  }

  /** A keepalive (empty transport packet) with the peer's sending keypair, if it has one. */
  private sendKeepalive(peer: Peer): boolean {
    const t = this.opts.table;
    const k = t.sendKeypair(peer.slot, this.now());
    const sock = this.opts.socket();
    if (k === NO_KEYPAIR || !sock) return false;
    const b = this.scratch;
    b.lens[0] = 0;
    b.addrs[0] = t.endpointAddr(peer.slot);
    b.ports[0] = t.endpointPort(peer.slot);
    const keyIdx = Uint32Array.of(k);
    sock.addon.wgSeal(b.buf, b.slotSize, b.lens, 1, t.sendKeys, keyIdx, Uint32Array.of(t.remoteIndex(k)), BigUint64Array.of(BigInt(t.takeCounters(k, 1))));
    if (b.lens[0] === 0) return false;
    sock.addon.udpSend(sock.fd, b.buf, b.slotSize, b.lens, b.addrs, b.ports, 1, false, false, sock.endpoints6);
    t.stampSent(peer.slot, this.now(), false, b.lens[0]!, SentBytesBy.MainThread);
    this.opts.stats[WgCounter.keepalivesSent]! += 1;
    return true;
  }

  /** Send an initiation to the peer (a retry keeps the first attempt's time, for REKEY_ATTEMPT_TIME). */
  initiate(peer: Peer): void {
    const now = this.now();
    const slot = this.allocKeypair();
    if (slot === null) return;
    const firstMs = peer.pending?.firstMs ?? now;
    if (peer.pending) {
      this.byPendingIndex.delete(peer.pending.state.localIndex);
      this.freeKeypair(peer.pending.slot);
    }
    const { message, state } = createInitiation(this.id, peer.cfg.publicKey, this.newIndex(slot));
    peer.cookies.addMacs(message, now);
    peer.pending = { state, slot, sentMs: now, firstMs };
    this.byPendingIndex.set(state.localIndex, peer);
    this.sendRaw(message, this.opts.table.endpointAddr(peer.slot), this.opts.table.endpointPort(peer.slot));
    this.opts.table.stampSent(peer.slot, now, false, message.length, SentBytesBy.MainThread);
    this.opts.stats[WgCounter.initiationsSent]! += 1;
  }

  // ---- receiving ----
  private underLoad(): boolean {
    const second = Math.floor(this.now() / 1000);
    if (second !== this.loadSecond) {
      this.loadSecond = second;
      this.loadCount = 0;
    }
    return ++this.loadCount > UNDER_LOAD_PER_SECOND;
  }

  /**
   * A handshake datagram the rx worker handed over, from addr:port (on an
   * IPv6 socket addr is the source's endpoint id and source6 its 16 bytes,
   * which a cookie is bound to).
   */
  handleHandshake(msg: Buffer, addr: number, port: number, source6?: Uint8Array): void {
    const s = this.opts.stats;
    const type = msg[0];
    if (type === MessageType.CookieReply) return this.cookieReply(msg);
    if (!this.checker.checkMac1(msg)) {
      s[WgCounter.dropBadMac]! += 1;
      return;
    }
    const source = source6 ? ipv6Source(source6, port) : ipv4Source(addr, port);
    if (this.underLoad()) {
      if (!this.checker.checkMac2(msg, source, this.now())) {
        this.sendRaw(this.checker.createReply(msg, source, this.now()), addr, port);
        s[WgCounter.cookieRepliesSent]! += 1;
        return;
      }
      // mac2 proves the source address is real: limit each one, as wireguard-go does.
      if (!this.limiter.allow(source6 ? sourceKey6(source6) : addr >>> 0, this.now())) {
        s[WgCounter.dropHandshakeRateLimited]! += 1;
        return;
      }
    }
    if (type === MessageType.Initiation) this.initiation(msg, addr, port);
    else this.response(msg, addr, port);
  }

  private initiation(msg: Buffer, addr: number, port: number): void {
    const s = this.opts.stats;
    s[WgCounter.initiationsReceived]! += 1;
    const got = consumeInitiation(this.id, msg);
    const peer = got ? this.peers_.get(got.remoteStatic.toString('hex')) : undefined;
    if (!got || !peer) {
      s[got ? WgCounter.dropUnknownPeer : WgCounter.handshakesFailed]! += 1;
      return;
    }
    const now = this.now();
    // A replayed initiation carries an old timestamp; a burst from one peer is cut to 50 per second.
    if (!timestampNewer(got.timestamp, peer.lastTimestamp) || now - peer.lastInitiationMs < INITIATION_MIN_INTERVAL) {
      s[WgCounter.handshakesFailed]! += 1;
      return;
    }
    const slot = this.allocKeypair();
    if (slot === null) return;
    const { message, keys } = createResponse(got, this.newIndex(slot), peer.cfg.psk);
    peer.lastTimestamp = got.timestamp;
    peer.lastInitiationMs = now;
    const t = this.opts.table;
    this.roamTo(peer, addr, port);
    t.writeKeypair(slot, peer.slot, keys.localIndex, keys.remoteIndex, keys.sendKey, keys.recvKey, false, now);
    // The new keypair waits as `next` until the initiator uses it; an unconfirmed older `next` is dropped.
    this.freeKeypair(t.next(peer.slot));
    t.setKeypairs(peer.slot, t.current(peer.slot), t.previous(peer.slot), slot);
    t.bump();
    peer.cookies.addMacs(message, now);
    this.sendRaw(message, addr, port);
    t.stampSent(peer.slot, now, false, message.length, SentBytesBy.MainThread);
    peer.lastHandshakeMs = now;
    s[WgCounter.responsesSent]! += 1;
    s[WgCounter.sessionsEstablished]! += 1;
  }

  private response(msg: Buffer, addr: number, port: number): void {
    const s = this.opts.stats;
    s[WgCounter.responsesReceived]! += 1;
    const peer = this.byPendingIndex.get(msg.readUInt32LE(Resp.receiver));
    const keys = peer?.pending ? consumeResponse(this.id, peer.pending.state, msg, peer.cfg.psk) : null;
    if (!peer || !peer.pending || !keys) {
      s[WgCounter.handshakesFailed]! += 1;
      return;
    }
    const now = this.now();
    const t = this.opts.table;
    this.roamTo(peer, addr, port);
    const slot = peer.pending.slot;
    this.byPendingIndex.delete(peer.pending.state.localIndex);
    peer.pending = null;
    t.writeKeypair(slot, peer.slot, keys.localIndex, keys.remoteIndex, keys.sendKey, keys.recvKey, true, now);
    this.freeKeypair(t.previous(peer.slot));
    this.freeKeypair(t.next(peer.slot));
    t.setKeypairs(peer.slot, slot, t.current(peer.slot), NO_KEYPAIR);
    t.bump();
    peer.lastHandshakeMs = now;
    s[WgCounter.sessionsEstablished]! += 1;
    // The responder may not send until we have: confirm the keypair at once.
    this.sendKeepalive(peer);
    this.opts.log.debug('WireGuard session established', { peer: peer.cfg.publicKey.toString('base64') });
  }

  /**
   * A cookie reply names the sender index of the message it answers: one of
   * our initiations (pending), or one of our responses, whose index is the
   * new keypair's (its low 16 bits the slot).
   */
  private cookieReply(msg: Buffer): void {
    const index = msg.readUInt32LE(Cookie.receiver);
    let peer = this.byPendingIndex.get(index);
    if (!peer) {
      const t = this.opts.table;
      const k = slotOfIndex(index, t.keypairCapacity);
      if (k >= 0 && t.keypairValid(k) && t.localIndex(k) === index) peer = this.bySlot.get(t.keypairPeer(k));
    }
    if (peer && peer.cookies.consumeReply(msg, this.now())) this.opts.stats[WgCounter.cookieRepliesReceived]! += 1;
    else this.opts.stats[WgCounter.dropBadMac]! += 1;
  }

  /** Roaming: an authenticated handshake from addr:port moves the peer's endpoint there. */
  private roamTo(peer: Peer, addr: number, port: number): void {
    const t = this.opts.table;
    const endpoints = this.opts.socket()?.endpoints6;
    const at = 16 * t.endpointAddr(peer.slot);
    const same = endpoints ? Buffer.compare(endpoints.subarray(at, at + 16), endpoints.subarray(16 * addr, 16 * addr + 16)) === 0 : t.endpointAddr(peer.slot) === addr >>> 0;
    if (same && t.endpointPort(peer.slot) === port) return;
    t.setEndpoint(peer.slot, this.opts.pinEndpoint ? this.opts.pinEndpoint(addr) : addr, port);
    this.opts.stats[WgCounter.roamed]! += 1;
  }

  /** A transport packet of the peer in `slot` came from addr:port (the rx worker's note, IPv6 sockets). */
  roamSlot(slot: number, addr: number, port: number): void {
    const peer = this.bySlot.get(slot);
    if (peer) this.roamTo(peer, addr, port);
  }

  /**
   * Forget every keypair (the dataplane restarted: new workers start with
   * empty replay windows, so an old keypair's packets could be replayed to
   * them); the peers hand-shake again at their next packet.
   */
  dropAllKeypairs(): void {
    const t = this.opts.table;
    for (const peer of this.peers_.values()) {
      const held = this.keypairsOf(peer);
      t.setKeypairs(peer.slot, NO_KEYPAIR, NO_KEYPAIR, NO_KEYPAIR);
      this.releaseKeypairs(peer, held);
    }
    t.bump();
  }

  /** The keypair slots the table's peer refers to: current, previous, next. */
  private keypairsOf(peer: Peer): number[] {
    const t = this.opts.table;
    return [t.current(peer.slot), t.previous(peer.slot), t.next(peer.slot)];
  }

  /** Free `held` (no longer referred to by the table) and the peer's pending handshake. */
  private releaseKeypairs(peer: Peer, held: number[]): void {
    for (const k of held) this.freeKeypair(k);
    if (!peer.pending) return;
    this.byPendingIndex.delete(peer.pending.state.localIndex);
    this.freeKeypair(peer.pending.slot);
    peer.pending = null;
  }

  // ---- timers ----
  /** Run the protocol's timers; called every ~100 ms. */
  tick(): void {
    const now = this.now();
    const t = this.opts.table;
    let changed = false;
    for (const peer of this.peers_.values()) {
      const p = peer.slot;
      // A responder's keypair the initiator has used becomes current.
      const next = t.next(p);
      if (next !== NO_KEYPAIR && t.keypairValid(next) && t.keypairFlags(next) & KeypairFlag.Confirmed) {
        this.freeKeypair(t.previous(p));
        t.setKeypairs(p, next, t.current(p), NO_KEYPAIR);
        changed = true;
      }
      // Keys older than three rejection periods are erased.
      for (const k of [t.current(p), t.previous(p), t.next(p)]) {
        if (k !== NO_KEYPAIR && now - t.created[k]! > 3 * REJECT_AFTER_TIME) {
          t.dropKeypair(p, k);
          this.freeKeypair(k);
          changed = true;
        }
      }
      let want = t.takeHandshakeWish(p);
      // Sent data and heard nothing back for KEEPALIVE + REKEY_TIMEOUT: the session may be dead.
      // Once per send: after giving up, only new data starts a new attempt.
      const sentData = t.lastDataSent(p);
      if (sentData > 0 && sentData > t.lastReceived(p) && sentData !== peer.noReplyFiredFor && now - Math.max(t.lastReceived(p), peer.lastHandshakeMs) > KEEPALIVE_TIMEOUT + REKEY_TIMEOUT) {
        peer.noReplyFiredFor = sentData;
        want = true;
      }
      // Data received on our own keypair close to its end of life: rekey now, once per such receive.
      const cur = t.current(p);
      const got = t.lastDataReceived(p);
      const age = cur === NO_KEYPAIR ? 0 : now - t.created[cur]!;
      if (cur !== NO_KEYPAIR && t.keypairFlags(cur) & KeypairFlag.Initiator && age > REJECT_AFTER_TIME - KEEPALIVE_TIMEOUT - REKEY_TIMEOUT && age < REJECT_AFTER_TIME && got > t.created[cur]! && got !== peer.oldKeyFiredFor) {
        peer.oldKeyFiredFor = got;
        want = true;
      }
      if (peer.pending) {
        if (now - peer.pending.firstMs > REKEY_ATTEMPT_TIME) {
          this.opts.stats[WgCounter.handshakesFailed]! += 1;
          this.opts.log.warn('WireGuard handshake gave up after 90 s', { peer: peer.cfg.publicKey.toString('base64') });
          this.byPendingIndex.delete(peer.pending.state.localIndex);
          this.freeKeypair(peer.pending.slot);
          peer.pending = null;
        } else if (now - peer.pending.sentMs > REKEY_TIMEOUT + Math.random() * 333) this.initiate(peer);
      } else if (want && now - peer.lastHandshakeMs > REKEY_TIMEOUT) this.initiate(peer);

      // Passive keepalive: data came in and we sent nothing back for KEEPALIVE_TIMEOUT.
      if (t.lastDataReceived(p) > t.lastSent(p) && now - t.lastDataReceived(p) >= KEEPALIVE_TIMEOUT) this.sendKeepalive(peer);
      else if (peer.cfg.keepaliveMs > 0 && now - t.lastSent(p) >= peer.cfg.keepaliveMs) this.sendKeepalive(peer);
    }
    if (changed) t.bump();
  }

  /** The peer slot of a public key (the route tables name peers by it); null when it is no peer. */
  slotOf(publicKey: Buffer): number | null {
    return this.peers_.get(publicKey.toString('hex'))?.slot ?? null;
  }

  /** The current endpoint of the peer in `slot` (diagnostics). */
  peerInSlot(slot: number): { addr: number; port: number } | null {
    if (!this.bySlot.has(slot)) return null;
    return { addr: this.opts.table.endpointAddr(slot), port: this.opts.table.endpointPort(slot) };
  }

  /** Peers with a keypair usable for sending. */
  sessionCount(): number {
    const t = this.opts.table;
    const now = this.now();
    let n = 0;
    for (const peer of this.peers_.values()) if (t.sendKeypair(peer.slot, now) !== NO_KEYPAIR) n++;
    return n;
  }

  // ---- the userspace API (uapi.ts) ----
  privateKey(): Buffer {
    return this.id.staticPrivate;
  }

  listenPort(): number {
    return this.opts.listenPort;
  }

  get endpoints(): EndpointCodec {
    return this.opts.endpoints ?? IPV4_ENDPOINTS;
  }

  peers(): UapiPeer[] {
    const t = this.opts.table;
    return [...this.peers_.values()].map((p) => ({
      publicKey: p.cfg.publicKey,
      psk: p.cfg.psk,
      addr: t.endpointAddr(p.slot),
      port: t.endpointPort(p.slot),
      allowedIPs: p.cfg.allowedIPs,
      // wg shows the wall-clock time of the last handshake; our timers keep it monotonic.
      lastHandshakeMs: p.lastHandshakeMs > 0 ? Math.round(Date.now() - (this.now() - p.lastHandshakeMs)) : 0,
      keepaliveMs: p.cfg.keepaliveMs,
      rxBytes: t.rxBytes(p.slot),
      txBytes: t.txBytes(p.slot),
    }));
  }

  updatePeer(publicKey: Buffer, change: { remove?: boolean; addr?: number; port?: number; keepaliveMs?: number; psk?: Buffer | null }): boolean {
    const hex = publicKey.toString('hex');
    const peer = this.peers_.get(hex);
    if (!peer) return false;
    if (change.remove) {
      this.removePeer(hex, peer);
      this.opts.table.bump();
      return true;
    }
    peer.cfg = { ...peer.cfg, ...(change.keepaliveMs !== undefined ? { keepaliveMs: change.keepaliveMs } : {}), ...(change.psk !== undefined ? { psk: change.psk } : {}) };
    // `wg set endpoint` moves the endpoint as a roam would; the lease's endpoint (cfg) returns when the lease changes.
    if (change.addr !== undefined) this.opts.table.setEndpoint(peer.slot, change.addr, change.port ?? this.opts.table.endpointPort(peer.slot));
    this.opts.table.bump();
    return true;
  }
}
