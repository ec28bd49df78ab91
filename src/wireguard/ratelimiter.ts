/**
 * Per-source token buckets for handshake messages, as wireguard-go's
 * ratelimiter (20 a second, a burst of 5 per source address): one source
 * cannot spend a budget that every peer shares. The table is bounded:
 * buckets idle for a second are swept, and when it is full a new source is
 * refused rather than growing it, whatever a flood of spoofed sources does.
 */
export const PACKETS_PER_SECOND = 20;
export const PACKETS_BURSTABLE = 5;
const SWEEP_EVERY_MS = 1000;
export const DEFAULT_MAX_SOURCES = 8192;

interface Bucket {
  tokens: number;
  last: number;
}

export class SourceRateLimiter {
  private readonly buckets = new Map<string | number, Bucket>();
  private lastSweep = 0;

  constructor(
    private readonly perSecond = PACKETS_PER_SECOND,
    private readonly burst = PACKETS_BURSTABLE,
    private readonly maxSources = DEFAULT_MAX_SOURCES,
  ) {}

  /** Whether one more message from `source` (an IPv4 u32 or an address's text) may pass at nowMs (a monotonic clock). */
  allow(source: string | number, nowMs: number): boolean {
    if (nowMs - this.lastSweep >= SWEEP_EVERY_MS) this.sweep(nowMs);
    let b = this.buckets.get(source);
    if (!b) {
      if (this.buckets.size >= this.maxSources) return false;
      b = { tokens: this.burst, last: nowMs };
      this.buckets.set(source, b);
    } else {
      b.tokens = Math.min(this.burst, b.tokens + ((nowMs - b.last) * this.perSecond) / 1000);
      b.last = nowMs;
    }
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** Buckets full again (idle for burst/rate) say nothing a new bucket would not: drop them. */
  private sweep(nowMs: number): void {
    this.lastSweep = nowMs;
    const idle = (this.burst * 1000) / this.perSecond;
    for (const [k, b] of this.buckets) if (nowMs - b.last >= idle) this.buckets.delete(k);
  }

  get size(): number {
    return this.buckets.size;
  }
}

/** An IPv6 source's key: its /64, as wireguard-go's ratelimiter (one host may hold a whole /64). */
export function sourceKey6(b: Uint8Array): string {
  return Buffer.from(b.buffer, b.byteOffset, 8).toString('hex');
}
