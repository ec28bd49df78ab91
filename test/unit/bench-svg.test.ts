import { test } from 'node:test';
import assert from 'node:assert/strict';
import { escapeXml, renderSvg } from '../../bench/svg.js';
import type { PathResult } from '../../bench/report.js';

/**
 * Minimal XML well-formedness check (no dependency): one root element, tags
 * balanced and properly nested, attributes quoted, only the five predefined
 * entities or character references, no stray '<' or '&' in text.
 */
function checkWellFormed(xml: string): string[] {
  const body = xml.replace(/^<\?xml[^?]*\?>\s*/, '');
  const stack: string[] = [];
  let roots = 0;
  const tagRe = /<(\/?)([A-Za-z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/y;
  let i = 0;
  while (i < body.length) {
    const lt = body.indexOf('<', i);
    const text = body.slice(i, lt < 0 ? body.length : lt);
    for (const m of text.matchAll(/&([^;\s]*);?/g)) {
      if (!/^&(amp|lt|gt|quot|apos|#\d+|#x[0-9a-fA-F]+);$/.test(m[0])) return [`bad entity ${m[0]}`];
    }
    if (stack.length === 0 && text.trim()) return [`text outside the root: ${text.trim().slice(0, 20)}`];
    if (lt < 0) break;
    tagRe.lastIndex = lt;
    const m = tagRe.exec(body);
    if (!m) return [`malformed tag at ${lt}: ${body.slice(lt, lt + 40)}`];
    const [, close, name, , selfClose] = m;
    if (close) {
      if (stack.pop() !== name) return [`mismatched </${name}>`];
    } else if (!selfClose) {
      if (stack.length === 0) roots++;
      stack.push(name!);
    } else if (stack.length === 0) roots++;
    i = tagRe.lastIndex;
  }
  const errs: string[] = [];
  if (stack.length) errs.push(`unclosed ${stack.join(',')}`);
  if (roots !== 1) errs.push(`${roots} root elements`);
  return errs;
}

const ok = (path: 'veth' | 'vxlan' | 'udp', label: string, gbps: number): PathResult => ({
  path,
  label,
  status: 'ok',
  suite: {
    tcp1: { protocol: 'TCP', streams: 1, seconds: 2, bytes: 1, bitsPerSecond: gbps * 1e9, retransmits: 0 },
    latency: { method: 'ping', sent: 10, received: 10, minMs: 0.04, avgMs: 0.05, p50Ms: 0.05, maxMs: 0.06 },
    errors: {},
  },
});

test('the checker itself rejects broken XML', () => {
  assert.deepEqual(checkWellFormed('<svg><g></g></svg>'), []);
  assert.notDeepEqual(checkWellFormed('<svg><g></svg>'), []);
  assert.notDeepEqual(checkWellFormed('<svg>a & b</svg>'), []);
  assert.notDeepEqual(checkWellFormed('<svg x=1></svg>'), []);
  assert.notDeepEqual(checkWellFormed('<svg/><svg/>'), []);
});

test('renderSvg: well-formed, one bar per measured path and metric, ratios in labels', () => {
  const results: PathResult[] = [ok('veth', 'bare veth', 20), ok('vxlan', 'kernel VXLAN', 10), ok('udp', 'flannel-ts <udp> & co', 2)];
  const svg = renderSvg(results, { title: 'bench "A" & <B>', subtitle: "it's" });
  assert.deepEqual(checkWellFormed(svg), []);
  assert.match(svg, /^<\?xml version="1.0" encoding="UTF-8"\?>\n<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
  // Metrics present: TCP 1 stream, RTT avg, RTT p50 -> 3 panels x 3 paths; the label column fits the longest label.
  const labelW = 20 + 7 * 'flannel-ts <udp> & co'.length;
  assert.equal(svg.match(new RegExp(`<rect x="${labelW}"`, 'g'))?.length, 9);
  assert.ok(svg.includes('flannel-ts &lt;udp&gt; &amp; co'));
  assert.ok(svg.includes('2.00 (0.20x vxlan, 0.10x veth)'));
  assert.ok(svg.includes('bench &quot;A&quot; &amp; &lt;B&gt;'));
  // A long label (the userspace WireGuard's) keeps its start: its right edge is inside the label column, which is wide enough.
  const long = renderSvg([ok('udp', 'flannel-ts wireguard (userspace)', 2)], { title: 't' });
  const x = Number(/<text x="(\d+)" y="\d+" font-size="12" text-anchor="end">flannel-ts wireguard \(userspace\)/.exec(long)?.[1]);
  assert.ok(x >= 'flannel-ts wireguard (userspace)'.length * 6.5, `label ends at ${x}`);
});

test('renderSvg: unavailable paths listed, empty run still well-formed', () => {
  const svg = renderSvg([{ path: 'udp', label: 'flannel-ts udp', status: 'unavailable', reason: 'flanneld exited (1): <boom>' }], { title: 't' });
  assert.deepEqual(checkWellFormed(svg), []);
  assert.ok(svg.includes('flannel-ts udp: unavailable: flanneld exited (1): &lt;boom&gt;'));
  assert.equal(svg.match(/<rect x="130"/g), null);
});

test('escapeXml covers the five special characters', () => {
  assert.equal(escapeXml(`<a href="x">'&'</a>`), '&lt;a href=&quot;x&quot;&gt;&apos;&amp;&apos;&lt;/a&gt;');
});
