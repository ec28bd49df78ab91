/**
 * Turning per-path results into comparable numbers: the metric table, the
 * ratios against the reference paths measured in the same run, and the text
 * table. Pure functions, unit-tested.
 */
import type { SuiteResult } from './measure.js';
import type { PathId } from './paths.js';
import { ratio } from './stats.js';

export interface PathResult {
  path: PathId;
  label: string;
  status: 'ok' | 'unavailable' | 'failed';
  reason?: string;
  targetIp?: string;
  notes?: string[];
  suite?: SuiteResult;
}

export interface MetricDef {
  key: string;
  label: string;
  unit: string;
  /** Which direction is better; 'none' for figures not worth a ratio. */
  better: 'higher' | 'lower' | 'none';
  digits: number;
  get(s: SuiteResult): number | null;
}

export const METRICS: MetricDef[] = [
  { key: 'tcp1', label: 'TCP 1 stream', unit: 'Gbit/s', better: 'higher', digits: 2, get: (s) => (s.tcp1 ? s.tcp1.bitsPerSecond / 1e9 : null) },
  { key: 'tcp4', label: 'TCP 4 streams', unit: 'Gbit/s', better: 'higher', digits: 2, get: (s) => (s.tcp4 ? s.tcp4.bitsPerSecond / 1e9 : null) },
  { key: 'udp1400', label: 'UDP 1400B received', unit: 'Gbit/s', better: 'higher', digits: 3, get: (s) => (s.udp1400 ? s.udp1400.bitsPerSecond / 1e9 : null) },
  { key: 'udp1400loss', label: 'UDP 1400B loss', unit: '%', better: 'none', digits: 1, get: (s) => s.udp1400?.lostPercent ?? null },
  { key: 'udp64', label: 'UDP 64B received', unit: 'Mbit/s', better: 'higher', digits: 1, get: (s) => (s.udp64 ? s.udp64.bitsPerSecond / 1e6 : null) },
  { key: 'udp64loss', label: 'UDP 64B loss', unit: '%', better: 'none', digits: 1, get: (s) => s.udp64?.lostPercent ?? null },
  { key: 'rttAvg', label: 'RTT avg', unit: 'ms', better: 'lower', digits: 3, get: (s) => s.latency?.avgMs ?? null },
  { key: 'rttP50', label: 'RTT p50', unit: 'ms', better: 'lower', digits: 3, get: (s) => s.latency?.p50Ms ?? null },
  { key: 'cpuPerGB', label: 'daemon CPU (TCP 1)', unit: 's/GB', better: 'none', digits: 2, get: (s) => s.cpu?.tcp1?.secondsPerGB ?? null },
];

export type MetricTable = Record<string, Record<string, number | null>>;

/** metric key -> path -> value, for the paths that ran. */
export function metricTable(results: PathResult[]): MetricTable {
  const t: MetricTable = {};
  for (const m of METRICS) {
    t[m.key] = {};
    for (const r of results) if (r.suite) t[m.key]![r.path] = m.get(r.suite);
  }
  return t;
}

/** The reference paths, in the order ratios are shown. */
export const REFERENCES: PathId[] = ['vxlan', 'veth'];

export interface RatioColumn {
  /** e.g. "udp/vxlan" */
  name: string;
  path: PathId;
  ref: PathId;
}

/**
 * Ratio columns for the paths that ran: every path against each reference
 * that ran, except a reference against a "heavier" one (veth/vxlan would just
 * be the inverse of vxlan/veth).
 */
/** Pairs compared head to head besides the references: each path against the program or kernel path it stands beside. */
export const HEAD_TO_HEAD: [PathId, PathId][] = [['ftwg', 'wggo'], ['udp', 'flannel-udp'], ['ftvxlan6', 'vxlan6']];

export function ratioColumns(paths: PathId[]): RatioColumn[] {
  const cols: RatioColumn[] = [];
  for (const [p, ref] of HEAD_TO_HEAD) if (paths.includes(p) && paths.includes(ref)) cols.push({ name: `${p}/${ref}`, path: p, ref });
  for (const p of paths) {
    for (const ref of REFERENCES) {
      if (p === ref || !paths.includes(ref)) continue;
      if (REFERENCES.includes(p) && REFERENCES.indexOf(p) > REFERENCES.indexOf(ref)) continue;
      cols.push({ name: `${p}/${ref}`, path: p, ref });
    }
  }
  return cols;
}

/** column name -> metric key -> value(path) / value(ref), for metrics where a ratio means something. */
export function computeRatios(table: MetricTable, cols: RatioColumn[]): Record<string, Record<string, number | null>> {
  const out: Record<string, Record<string, number | null>> = {};
  for (const c of cols) {
    out[c.name] = {};
    for (const m of METRICS) {
      if (m.better === 'none') continue;
      out[c.name]![m.key] = ratio(table[m.key]?.[c.path], table[m.key]?.[c.ref]);
    }
  }
  return out;
}

export function formatNumber(v: number | null | undefined, digits: number): string {
  if (v == null || !Number.isFinite(v)) return '-';
  return v.toFixed(digits);
}

function pad(cells: string[][]): string {
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((row) => row[i]!.length)));
  return cells.map((row) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd()).join('\n');
}

/** Plain-text table: metrics as rows, paths then ratio columns. */
export function renderTable(results: PathResult[]): string {
  const ran = results.filter((r) => r.suite);
  const table = metricTable(results);
  const cols = ratioColumns(ran.map((r) => r.path));
  const ratios = computeRatios(table, cols);
  const header = ['metric', ...ran.map((r) => r.label), ...cols.map((c) => c.name)];
  const rows = METRICS.filter((m) => ran.some((r) => table[m.key]![r.path] != null)).map((m) => [
    `${m.label} (${m.unit})`,
    ...ran.map((r) => formatNumber(table[m.key]![r.path], m.digits)),
    ...cols.map((c) => (m.better === 'none' ? '' : formatRatio(ratios[c.name]![m.key] ?? null))),
  ]);
  const lines = [ran.length ? pad([header, ...rows]) : '(no path measured)'];
  for (const r of results) {
    if (r.status !== 'ok') lines.push(`${r.label}: ${r.status}: ${r.reason ?? ''}`);
    for (const [k, e] of Object.entries(r.suite?.errors ?? {})) lines.push(`${r.label}: ${k} failed: ${e}`);
  }
  return lines.join('\n');
}

export function formatRatio(v: number | null): string {
  return v == null ? '-' : `${v.toFixed(2)}x`;
}
