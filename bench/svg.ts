/**
 * The result table as a hand-written SVG bar chart: one panel per metric,
 * one horizontal bar per path, scaled to the panel's largest value.
 */
import { METRICS, metricTable, formatNumber, formatRatio, ratioColumns, type PathResult } from './report.js';
import { ratio } from './stats.js';

export function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

const COLORS: Record<string, string> = { veth: '#7f8c8d', vxlan: '#2980b9', ftvxlan: '#16a085', udp: '#e67e22', 'flannel-udp': '#8e44ad' };

/** Room right of a bar for its value and ratios. */
const VALUE_W = 270;
/** A 12 px sans-serif character is at most about 7 px wide: the label column fits the longest row label. */
const CHAR_W = 7;
const BAR_MAX = 400;
const BAR_H = 16;
const ROW_H = 22;

export interface SvgMeta {
  title: string;
  subtitle?: string;
}

export function renderSvg(results: PathResult[], meta: SvgMeta): string {
  const ran = results.filter((r) => r.suite);
  const table = metricTable(results);
  const cols = ratioColumns(ran.map((r) => r.path));
  const metrics = METRICS.filter((m) => ran.some((r) => table[m.key]![r.path] != null));
  const out: string[] = [];
  // Wide enough for the longest label ("flannel-ts wireguard (userspace)" was cut at 130 px).
  const LABEL_W = Math.max(130, 20 + CHAR_W * Math.max(0, ...ran.map((r) => r.label.length)));
  const WIDTH = Math.max(800, LABEL_W + BAR_MAX + VALUE_W);
  let y = 30;
  out.push(`<text x="12" y="${y}" font-size="16" font-weight="bold">${escapeXml(meta.title)}</text>`);
  if (meta.subtitle) {
    y += 18;
    out.push(`<text x="12" y="${y}" font-size="11" fill="#555">${escapeXml(meta.subtitle)}</text>`);
  }
  y += 14;
  for (const m of metrics) {
    y += 20;
    const hint = m.better === 'higher' ? 'higher is better' : m.better === 'lower' ? 'lower is better' : '';
    out.push(`<text x="12" y="${y}" font-size="13" font-weight="bold">${escapeXml(`${m.label} (${m.unit})`)}<tspan font-weight="normal" fill="#777" font-size="11">${hint ? '\u00a0— ' + escapeXml(hint) : ''}</tspan></text>`);
    y += 6;
    const values = ran.map((r) => table[m.key]![r.path] ?? null);
    const max = Math.max(0, ...values.filter((v): v is number => v != null && Number.isFinite(v)));
    ran.forEach((r, i) => {
      const v = values[i] ?? null;
      const top = y + i * ROW_H;
      const w = v != null && max > 0 ? Math.max(1, Math.round((v / max) * BAR_MAX)) : 0;
      out.push(`<text x="${LABEL_W - 8}" y="${top + BAR_H - 3}" font-size="12" text-anchor="end">${escapeXml(r.label)}</text>`);
      if (v != null) out.push(`<rect x="${LABEL_W}" y="${top}" width="${w}" height="${BAR_H}" fill="${COLORS[r.path] ?? '#999'}"/>`);
      // Ratios against the references sit beside the value, as in the text table.
      const rel = m.better === 'none' ? [] : cols.filter((c) => c.path === r.path).map((c) => `${formatRatio(ratio(v, table[m.key]![c.ref]))} ${c.ref}`);
      const label = formatNumber(v, m.digits) + (rel.length ? ` (${rel.join(', ')})` : '');
      out.push(`<text x="${LABEL_W + w + 6}" y="${top + BAR_H - 3}" font-size="12">${escapeXml(label)}</text>`);
    });
    y += ran.length * ROW_H;
  }
  const skipped = results.filter((r) => r.status !== 'ok');
  for (const r of skipped) {
    y += 18;
    out.push(`<text x="12" y="${y}" font-size="11" fill="#a00">${escapeXml(`${r.label}: ${r.status}: ${r.reason ?? ''}`.slice(0, 140))}</text>`);
  }
  y += 16;
  return [
    `<?xml version="1.0" encoding="UTF-8"?>`,
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${y}" viewBox="0 0 ${WIDTH} ${y}" font-family="sans-serif">`,
    `<rect width="100%" height="100%" fill="#fff"/>`,
    ...out,
    `</svg>`,
    '',
  ].join('\n');
}
