/**
 * IPsec (xfrm) policies as the ipsec backend installs them, as flannel's
 * handle_xfrm.go does: selector `src <subnet> dst <subnet> dir out|in|fwd`
 * and one template `tmpl src <PublicIP> dst <PublicIP> proto esp reqid N
 * mode tunnel`. `ip xfrm` has no JSON output, so the text of `ip xfrm policy
 * show` is parsed here; only policies of exactly that shape are recognised,
 * so anything else in the SPD (charon's own, an operator's) is never
 * claimed.
 */
import { parseIP4Net, formatIP4Net } from './ipaddr.js';

export type XfrmDir = 'out' | 'in' | 'fwd';

export interface XfrmPolicySpec {
  /** Selector: traffic from this subnet... */
  src: string;
  /** ...to this subnet... */
  dst: string;
  /** ...leaving (out), arriving for us (in) or passing through (fwd). */
  dir: XfrmDir;
  /** Tunnel endpoints of the ESP template. */
  tmplSrc: string;
  tmplDst: string;
  reqid: number;
  /** The lease this policy is for (its store key), named when it fails. */
  origin?: string;
}

/** The `ip` command (without "ip") that installs or replaces a policy. */
export function policyUpdateLine(p: XfrmPolicySpec): string {
  return `xfrm policy update src ${p.src} dst ${p.dst} dir ${p.dir} tmpl src ${p.tmplSrc} dst ${p.tmplDst} proto esp reqid ${p.reqid} mode tunnel`;
}

/** The `ip` command that deletes a policy: selector and direction name it. */
export function policyDeleteLine(p: Pick<XfrmPolicySpec, 'src' | 'dst' | 'dir'>): string {
  return `xfrm policy delete src ${p.src} dst ${p.dst} dir ${p.dir}`;
}

/** The key a policy is known by in the SPD: one policy per selector and direction. */
export const policyKey = (p: Pick<XfrmPolicySpec, 'src' | 'dst' | 'dir'>) => `${p.src} ${p.dst} ${p.dir}`;

/**
 * Parse `ip xfrm policy show` into the policies of our shape. A block starts
 * at a line with no indentation; a block with anything more than selector,
 * direction, priority, ptype and one ESP tunnel template is skipped.
 */
export function parseXfrmPolicies(text: string): XfrmPolicySpec[] {
  const blocks: string[][] = [];
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    if (!/^\s/.test(line)) blocks.push([]);
    blocks[blocks.length - 1]?.push(line.trim());
  }
  const out: XfrmPolicySpec[] = [];
  for (const b of blocks) {
    const p = parseBlock(b);
    if (p) out.push(p);
  }
  return out;
}

function parseBlock(lines: string[]): XfrmPolicySpec | null {
  const sel = /^src (\S+) dst (\S+)$/.exec(lines[0] ?? '');
  const dir = /^dir (out|in|fwd) priority \d+ ptype main$/.exec(lines[1] ?? '');
  const tmpl = /^tmpl src (\S+) dst (\S+)$/.exec(lines[2] ?? '');
  const proto = /^proto esp reqid (\d+) mode tunnel$/.exec(lines[3] ?? '');
  if (!sel || !dir || !tmpl || !proto || lines.length !== 4) return null;
  const src = canonicalNet(sel[1]!);
  const dst = canonicalNet(sel[2]!);
  if (!src || !dst) return null;
  return { src, dst, dir: dir[1] as XfrmDir, tmplSrc: tmpl[1]!, tmplDst: tmpl[2]!, reqid: Number(proto[1]) };
}

function canonicalNet(s: string): string | null {
  try {
    return formatIP4Net(parseIP4Net(s.includes('/') ? s : `${s}/32`));
  } catch {
    return null;
  }
}
