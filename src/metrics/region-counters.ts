/**
 * Counters kept per writer thread: a SharedArrayBuffer of `regions` blocks
 * of `count` Float64 counters, each block written by one thread only (no
 * atomics needed), summed when read. The udp dataplane and the WireGuard
 * protocol both count this way.
 */
export function sumRegions<K extends string>(sab: SharedArrayBuffer, index: Record<K, number>, count: number, regions: number): Record<K, number> {
  const all = new Float64Array(sab);
  const out = {} as Record<K, number>;
  for (const [name, idx] of Object.entries(index) as [K, number][]) {
    let v = 0;
    for (let r = 0; r < regions; r++) v += all[r * count + idx]!;
    out[name] = v;
  }
  return out;
}
