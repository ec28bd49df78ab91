/**
 * WireGuard counters in shared memory, one region per writer thread (tx
 * worker, rx worker, main thread), as the udp dataplane's: every transport
 * datagram the rx worker reads is opened or counted under one drop reason.
 */
import { sumRegions } from '../metrics/region-counters.js';

export const WgCounter = {
  sealed: 0,
  opened: 1,
  keepalivesSent: 2,
  keepalivesReceived: 3,
  initiationsSent: 4,
  initiationsReceived: 5,
  responsesSent: 6,
  responsesReceived: 7,
  handshakesFailed: 8,
  cookieRepliesSent: 9,
  cookieRepliesReceived: 10,
  sessionsEstablished: 11,
  dropNoSession: 12,
  dropStaleSession: 13,
  dropUnknownPeer: 14,
  dropBadMac: 15,
  dropReplay: 16,
  dropTooBig: 17,
  dropMalformed: 18,
  dropHandshakeBacklog: 19,
  /** A handshake message over its source's rate (ratelimiter.ts). */
  dropHandshakeRateLimited: 20,
  /** A peer's endpoint moved to the source of an authenticated packet (roaming). */
  roamed: 21,
  /** A packet opened under a keypair that was freed meanwhile (its generation moved during the batch). */
  dropKeypairGone: 22,
} as const;
const COUNT = 24;
export const WG_REGION_TX = 0;
export const WG_REGION_RX = 1;
export const WG_REGION_MAIN = 2;
const REGIONS = 3;

export type WgCounterName = keyof typeof WgCounter;

export const createWgCounterBuffer = () => new SharedArrayBuffer(REGIONS * COUNT * 8);
export const wgCounterRegion = (sab: SharedArrayBuffer, region: number) => new Float64Array(sab, region * COUNT * 8, COUNT);

export function readWgCounters(sab: SharedArrayBuffer): Record<WgCounterName, number> {
  return sumRegions<WgCounterName>(sab, WgCounter, COUNT, REGIONS);
}

const DROPS: [WgCounterName, string][] = [
  ['dropNoSession', 'no_session'],
  ['dropStaleSession', 'stale_session'],
  ['dropUnknownPeer', 'unknown_peer'],
  ['dropBadMac', 'bad_mac'],
  ['dropReplay', 'replay'],
  ['dropTooBig', 'too_big'],
  ['dropMalformed', 'malformed'],
  ['dropHandshakeBacklog', 'handshake_backlog'],
  ['dropHandshakeRateLimited', 'handshake_rate_limited'],
  ['dropKeypairGone', 'keypair_gone'],
];

/** Prometheus text; `sessions` is the gauge of established sessions (the main thread knows it). */
export function renderWgCounters(sab: SharedArrayBuffer, sessions: number, p = 'flannel_wireguard'): string {
  const c = readWgCounters(sab);
  const lines = [
    `# HELP ${p}_handshakes_total Handshake messages, by kind.`,
    `# TYPE ${p}_handshakes_total counter`,
    `${p}_handshakes_total{kind="initiation_sent"} ${c.initiationsSent}`,
    `${p}_handshakes_total{kind="initiation_received"} ${c.initiationsReceived}`,
    `${p}_handshakes_total{kind="response_sent"} ${c.responsesSent}`,
    `${p}_handshakes_total{kind="response_received"} ${c.responsesReceived}`,
    `${p}_handshakes_total{kind="cookie_reply_sent"} ${c.cookieRepliesSent}`,
    `${p}_handshakes_total{kind="cookie_reply_received"} ${c.cookieRepliesReceived}`,
    `${p}_handshakes_total{kind="failed"} ${c.handshakesFailed}`,
    `# HELP ${p}_sessions_established_total Sessions (keypairs) established.`,
    `# TYPE ${p}_sessions_established_total counter`,
    `${p}_sessions_established_total ${c.sessionsEstablished}`,
    `# HELP ${p}_sessions Peers with a usable session now.`,
    `# TYPE ${p}_sessions gauge`,
    `${p}_sessions ${sessions}`,
    `# HELP ${p}_packets_total Transport packets sealed and opened; keepalives sent and received.`,
    `# TYPE ${p}_packets_total counter`,
    `${p}_packets_total{op="sealed"} ${c.sealed}`,
    `${p}_packets_total{op="opened"} ${c.opened}`,
    `${p}_packets_total{op="keepalive_sent"} ${c.keepalivesSent}`,
    `${p}_packets_total{op="keepalive_received"} ${c.keepalivesReceived}`,
    `# HELP ${p}_endpoint_roams_total Peer endpoints moved to the source of an authenticated packet.`,
    `# TYPE ${p}_endpoint_roams_total counter`,
    `${p}_endpoint_roams_total ${c.roamed}`,
    `# HELP ${p}_dropped_total Datagrams and packets dropped, by reason.`,
    `# TYPE ${p}_dropped_total counter`,
    ...DROPS.map(([n, reason]) => `${p}_dropped_total{reason="${reason}"} ${c[n]}`),
  ];
  return lines.join('\n') + '\n';
}
