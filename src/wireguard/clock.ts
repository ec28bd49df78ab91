/**
 * The clock of every WireGuard timer and key lifetime: CLOCK_MONOTONIC
 * (process.hrtime), the same in every thread of the process, so times one
 * thread stamps into the peer table compare with another's, and a wall
 * clock stepped back (NTP, an operator) never postpones a rekey,
 * REJECT_AFTER_TIME or key erasure. Only TAI64N handshake timestamps are
 * wall-clock (noise.ts), as the protocol wants.
 *
 * The offset keeps 0, the never-set value of every stamp, a long time ago
 * even on a machine booted a moment ago.
 */
export const CLOCK_OFFSET_MS = 86_400_000;

export function monotonicMs(): number {
  const [s, ns] = process.hrtime();
  return s * 1000 + ns / 1e6 + CLOCK_OFFSET_MS;
}
