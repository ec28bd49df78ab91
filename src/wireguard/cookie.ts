/**
 * WireGuard's mac1/mac2 and cookies (whitepaper 5.4.4 and 5.4.7): every
 * handshake message carries mac1, keyed by the receiver's public key, so a
 * datagram from someone who does not know it is dropped after one BLAKE2s
 * and before any DH. Under load a responder answers an initiation or
 * response without a valid mac2 with a cookie reply instead of doing the
 * handshake; the cookie is bound to the sender's address and changes every
 * two minutes, and the initiator sends it back as mac2.
 */
import { randomBytes } from 'node:crypto';
import { equal, hash, mac, xaeadOpen, xaeadSeal } from './primitives.js';
import { Cookie, COOKIE_REPLY_LEN, COOKIE_SECRET_MAX_AGE, LABEL_COOKIE, LABEL_MAC1, MessageType } from './messages.js';

/** Offsets of mac1 and mac2 in a handshake message: its last 32 bytes. */
const macOffsets = (msg: Uint8Array) => ({ mac1: msg.length - 32, mac2: msg.length - 16 });

export const mac1Key = (staticPublic: Uint8Array): Buffer => hash(Buffer.from(LABEL_MAC1), staticPublic);
export const cookieKey = (staticPublic: Uint8Array): Buffer => hash(Buffer.from(LABEL_COOKIE), staticPublic);

/** The source a cookie is bound to, as wireguard-go binds it: the IPv4 address and the port. */
export function ipv4Source(addr: number, port: number): Buffer {
  const b = Buffer.alloc(6);
  b.writeUInt32BE(addr >>> 0, 0);
  b.writeUInt16BE(port, 4);
  return b;
}

/** The same for an IPv6 source: its 16 bytes and the port. */
export function ipv6Source(addr: Uint8Array, port: number): Buffer {
  const b = Buffer.alloc(18);
  b.set(addr.subarray(0, 16), 0);
  b.writeUInt16BE(port, 16);
  return b;
}

/** The responder side: checks mac1 and mac2 of messages to us, makes cookie replies. */
export class CookieChecker {
  private readonly mac1Key: Buffer;
  private readonly cookieKey: Buffer;
  private secret = randomBytes(32);
  private secretBorn = 0;

  constructor(ourPublic: Uint8Array) {
    this.mac1Key = mac1Key(ourPublic);
    this.cookieKey = cookieKey(ourPublic);
  }

  checkMac1(msg: Uint8Array): boolean {
    const { mac1 } = macOffsets(msg);
    return equal(mac(this.mac1Key, msg.subarray(0, mac1)), msg.subarray(mac1, mac1 + 16));
  }

  /** source: ipv4Source or ipv6Source of the datagram. */
  checkMac2(msg: Uint8Array, source: Uint8Array, nowMs = Date.now()): boolean {
    const { mac2 } = macOffsets(msg);
    return equal(mac(this.cookie(source, nowMs), msg.subarray(0, mac2)), msg.subarray(mac2, mac2 + 16));
  }

  /** The cookie reply to `msg` (an initiation or response whose mac1 was valid) from `source`. */
  createReply(msg: Uint8Array, source: Uint8Array, nowMs = Date.now()): Buffer {
    const { mac1 } = macOffsets(msg);
    const reply = Buffer.alloc(COOKIE_REPLY_LEN);
    reply[0] = MessageType.CookieReply;
    // The sender index of the message we answer: bytes 4..8 of both initiation and response.
    reply.set(msg.subarray(4, 8), Cookie.receiver);
    const nonce = randomBytes(24);
    nonce.copy(reply, Cookie.nonce);
    xaeadSeal(this.cookieKey, nonce, this.cookie(source, nowMs), msg.subarray(mac1, mac1 + 16)).copy(reply, Cookie.cookie);
    return reply;
  }

  private cookie(source: Uint8Array, nowMs: number): Buffer {
    if (nowMs - this.secretBorn > COOKIE_SECRET_MAX_AGE) {
      this.secret = randomBytes(32);
      this.secretBorn = nowMs;
    }
    return mac(this.secret, source);
  }
}

/** The initiator side, per peer: adds mac1 (and mac2 while a cookie is fresh), takes cookie replies. */
export class CookieGenerator {
  private readonly mac1Key: Buffer;
  private readonly cookieKey: Buffer;
  private cookie: Buffer | null = null;
  private cookieBorn = 0;
  private lastMac1: Buffer | null = null;

  constructor(peerPublic: Uint8Array) {
    this.mac1Key = mac1Key(peerPublic);
    this.cookieKey = cookieKey(peerPublic);
  }

  /** Fill mac1 and mac2 of a finished handshake message, in place. */
  addMacs(msg: Buffer, nowMs = Date.now()): void {
    const { mac1, mac2 } = macOffsets(msg);
    const m1 = mac(this.mac1Key, msg.subarray(0, mac1));
    m1.copy(msg, mac1);
    this.lastMac1 = m1;
    // A cookie is good for two minutes less a margin (the responder's secret may change under it).
    if (this.cookie && nowMs - this.cookieBorn < COOKIE_SECRET_MAX_AGE - 5_000) mac(this.cookie, msg.subarray(0, mac2)).copy(msg, mac2);
    else msg.fill(0, mac2, mac2 + 16);
  }

  /** Take a cookie reply; false when it does not decrypt against the last mac1 we sent. */
  consumeReply(reply: Uint8Array, nowMs = Date.now()): boolean {
    if (reply.length !== COOKIE_REPLY_LEN || !this.lastMac1) return false;
    const cookie = xaeadOpen(this.cookieKey, reply.subarray(Cookie.nonce, Cookie.nonce + 24), reply.subarray(Cookie.cookie, Cookie.cookie + 32), this.lastMac1);
    if (!cookie) return false;
    this.cookie = cookie;
    this.cookieBorn = nowMs;
    return true;
  }
}
