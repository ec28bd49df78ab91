/**
 * WireGuard's four message layouts and its protocol constants (whitepaper
 * sections 5.4 and 6). Integers are little-endian; the first byte is the
 * type, followed by three reserved zero bytes.
 */

export const MessageType = { Initiation: 1, Response: 2, CookieReply: 3, Transport: 4 } as const;

export const INITIATION_LEN = 148;
export const RESPONSE_LEN = 92;
export const COOKIE_REPLY_LEN = 64;
/** type, receiver index, counter. */
export const TRANSPORT_HEADER_LEN = 16;
/** Header plus Poly1305 tag; the payload is padded to 16 bytes on top. */
export const TRANSPORT_OVERHEAD = 32;
export const KEEPALIVE_LEN = TRANSPORT_OVERHEAD;

/** Offsets in an initiation. */
export const Init = { sender: 4, ephemeral: 8, static: 40, timestamp: 88, mac1: 116, mac2: 132 } as const;
/** Offsets in a response. */
export const Resp = { sender: 4, receiver: 8, ephemeral: 12, empty: 44, mac1: 60, mac2: 76 } as const;
/** Offsets in a cookie reply. */
export const Cookie = { receiver: 4, nonce: 8, cookie: 32 } as const;

export const CONSTRUCTION = 'Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s';
export const IDENTIFIER = 'WireGuard v1 zx2c4 Jason@zx2c4.com';
export const LABEL_MAC1 = 'mac1----';
export const LABEL_COOKIE = 'cookie--';

/** Timers and limits (whitepaper 6.1), in ms and messages. */
export const REKEY_AFTER_MESSAGES = 2n ** 60n;
export const REJECT_AFTER_MESSAGES = 2n ** 64n - 2n ** 13n - 1n;
export const REKEY_AFTER_TIME = 120_000;
export const REJECT_AFTER_TIME = 180_000;
export const REKEY_ATTEMPT_TIME = 90_000;
export const REKEY_TIMEOUT = 5_000;
export const KEEPALIVE_TIMEOUT = 10_000;
/** The responder's cookie secret changes this often. */
export const COOKIE_SECRET_MAX_AGE = 120_000;
/** One initiation per peer per this interval is handled (wireguard-go's 50 per second). */
export const INITIATION_MIN_INTERVAL = 20;

export function messageType(buf: Uint8Array, off = 0): number {
  // The three reserved bytes must be zero for a message to be WireGuard's.
  return buf[off + 1] === 0 && buf[off + 2] === 0 && buf[off + 3] === 0 ? buf[off]! : 0;
}
