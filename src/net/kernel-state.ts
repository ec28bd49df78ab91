/**
 * The kernel-state applier every kernel backend shares: a backend says what
 * per-peer state it wants (routes, permanent neighbour entries, FDB
 * entries), the applier reads what the kernel holds (`ip -json`, `bridge
 * -json`), computes the difference and applies it with one `bridge -batch`
 * and one `ip -batch` process per round, never one process per route.
 *
 * It owns only what its scope names: routes to destinations inside the
 * overlay Network on the backend's devices, and the permanent neighbour and
 * unicast FDB entries of the backend's own devices. Everything else (the
 * host's other routes, a link's connected route) is never touched. A round
 * with nothing to change runs no write at all, so a restarted daemon that
 * finds its earlier state changes nothing and nothing flaps.
 *
 * One bad entry never keeps the others from being applied: every token of
 * a wanted entry is checked to be canonical (canonical.ts) before a
 * line is built, and an entry that fails is refused and reported against
 * the lease it came from (`origin`); a line iproute2 refuses is logged with
 * its origin and iproute2's message while the rest of the batch still
 * applies (`-force`, and IpRoute.batch re-runs the rest should the program
 * exit on a line).
 */
import type { Logger } from '../log.js';
import { ip4NetContains, parseIP4Net, type IP4Net } from './ipaddr.js';
import type { BatchRunner, IpRunner } from './iproute.js';
import { isCanonicalIP4, isCanonicalMac, isCanonicalNet4, isDevName } from './canonical.js';
import { parseXfrmPolicies, policyDeleteLine, policyKey, policyUpdateLine, type XfrmPolicySpec } from './xfrm-policy.js';

export interface RouteSpec {
  /** Destination, "10.5.3.0/24". */
  dst: string;
  /** Gateway; absent for a device route. */
  via?: string;
  dev: string;
  /** The gateway is reachable through dev whatever the addresses say (vxlan, ipip). */
  onlink?: boolean;
  /** The lease this entry is for (its store key), named when it fails. */
  origin?: string;
}

/** A permanent neighbour entry: ip is at mac on dev. */
export interface NeighSpec {
  dev: string;
  ip: string;
  mac: string;
  origin?: string;
}

/** A unicast FDB entry of a vxlan device: frames for mac go to the VTEP at dst. */
export interface FdbSpec {
  dev: string;
  mac: string;
  dst: string;
  origin?: string;
}

export interface KernelState {
  routes: RouteSpec[];
  neighs: NeighSpec[];
  fdb: FdbSpec[];
  /** IPsec policies (ipsec backend); only read and written when the scope names a reqid. */
  policies?: XfrmPolicySpec[];
}

export interface KernelScope {
  /** Routes owned: destination strictly inside this network... */
  network: IP4Net;
  /** ...through one of these devices. */
  routeDevs: string[];
  /** Devices whose permanent IPv4 neighbour entries and unicast FDB entries are all ours. */
  ownedDevs: string[];
  /**
   * ESP tunnel policies owned: those with this template reqid whose selector
   * subnets both lie strictly inside the network (flannel's ipsec policies).
   */
  xfrmReqid?: number;
}

export interface ApplyResult {
  /** Lines run (or, in a dry run, that would run), "ip ..." and "bridge ...". */
  lines: string[];
  /** Entries refused before any line was built, and lines iproute2 refused; `origin` names the lease. */
  failures: { line: string; message: string; origin?: string }[];
}

interface JsonRoute {
  dst: string;
  gateway?: string;
  dev?: string;
  flags?: string[];
}
interface JsonNeigh {
  dst: string;
  lladdr?: string;
  state?: string[];
}
interface JsonFdb {
  mac: string;
  dst?: string;
}

export interface KernelStateApplierOptions {
  scope: KernelScope;
  /** Runs the read-only `ip -json ... show` and `bridge -json fdb show` queries (always for real, also in a dry run). */
  readIp: IpRunner;
  readBridge: IpRunner;
  /** Run the writes: real runners, or plan-mode ones for a dry run. */
  writeIp: BatchRunner;
  writeBridge: BatchRunner;
  log: Logger;
}

const routeKey = (r: RouteSpec) => `${r.dst} ${r.via ?? '-'} ${r.dev} ${r.onlink ? 'onlink' : ''}`;

export class KernelStateApplier {
  /**
   * What the kernel holds after the last round that fully succeeded, or null
   * (read it): a lease-event round diffs against this instead of reading the
   * kernel, so one change costs one small write and no read of 1,000 routes.
   */
  private known: KernelState | null = null;

  constructor(private readonly opts: KernelStateApplierOptions) {}

  /**
   * Make the kernel hold exactly `want` within the scope. With `reread`
   * (the first round, the periodic recheck) the kernel is read; otherwise
   * the state the last successful round left is trusted.
   */
  async apply(wanted: KernelState, opts: { reread?: boolean } = {}): Promise<ApplyResult> {
    const { want, refused } = validState(wanted);
    const known = opts.reread === false ? this.known : null;
    const [routes, neighs, fdb, policies] = known
      ? [known.routes, known.neighs, known.fdb, known.policies ?? []]
      : await Promise.all([this.readRoutes(), this.readNeighs(), this.readFdb(), this.readPolicies()]);
    const ipLines: string[] = [];
    const bridgeLines: string[] = [];

    // FDB and neighbour entries first: an onlink route's gateway must resolve through them.
    const haveFdb = new Map(fdb.map((f) => [`${f.dev} ${f.mac}`, f]));
    const wantFdb = new Map(want.fdb.map((f) => [`${f.dev} ${f.mac.toLowerCase()}`, f]));
    for (const [k, f] of wantFdb) if (haveFdb.get(k)?.dst !== f.dst) bridgeLines.push(`fdb replace ${f.mac.toLowerCase()} dev ${f.dev} dst ${f.dst} self permanent`);
    for (const [k, f] of haveFdb) if (!wantFdb.has(k)) bridgeLines.push(`fdb del ${f.mac} dev ${f.dev} dst ${f.dst} self`);

    const haveNeigh = new Map(neighs.map((n) => [`${n.dev} ${n.ip}`, n]));
    const wantNeigh = new Map(want.neighs.map((n) => [`${n.dev} ${n.ip}`, n]));
    for (const [k, n] of wantNeigh) if (haveNeigh.get(k)?.mac !== n.mac.toLowerCase()) ipLines.push(`neigh replace ${n.ip} lladdr ${n.mac.toLowerCase()} dev ${n.dev} nud permanent`);
    for (const [k, n] of haveNeigh) if (!wantNeigh.has(k)) ipLines.push(`neigh del ${n.ip} dev ${n.dev}`);

    const haveRoute = new Map(routes.map((r) => [r.dst, r]));
    const wantRoute = new Map(want.routes.map((r) => [r.dst, r]));
    for (const [dst, r] of haveRoute) if (!wantRoute.has(dst)) ipLines.push(`route del ${dst} dev ${r.dev}`);
    for (const [dst, r] of wantRoute) {
      const cur = haveRoute.get(dst);
      if (cur && routeKey(cur) === routeKey(r)) continue;
      ipLines.push(`route replace ${dst}${r.via ? ` via ${r.via}` : ''} dev ${r.dev}${r.onlink ? ' onlink' : ''}`);
    }

    const havePolicy = new Map(policies.map((p) => [policyKey(p), p]));
    const wantPolicy = new Map((want.policies ?? []).map((p) => [policyKey(p), p]));
    for (const [k, p] of havePolicy) if (!wantPolicy.has(k)) ipLines.push(policyDeleteLine(p));
    for (const [k, p] of wantPolicy) {
      const cur = havePolicy.get(k);
      if (!cur || policyUpdateLine(cur) !== policyUpdateLine(p)) ipLines.push(policyUpdateLine(p));
    }

    const origins = originsByLine(want);
    const lineFailures = [
      ...(await this.opts.writeBridge.batch(bridgeLines)).map((f) => ({ ...f, line: `bridge ${f.line}`, origin: origins.get(`bridge ${f.line}`) })),
      ...(await this.opts.writeIp.batch(ipLines)).map((f) => ({ ...f, line: `ip ${f.line}`, origin: origins.get(`ip ${f.line}`) })),
    ];
    for (const f of lineFailures) this.opts.log.error('kernel state change failed', { command: f.line, error: f.message, ...(f.origin ? { lease: f.origin } : {}) });
    for (const f of refused) this.opts.log.error('kernel state entry refused', { entry: f.line, error: f.message, ...(f.origin ? { lease: f.origin } : {}) });
    const failures = [...refused, ...lineFailures];
    // After a failing line nobody knows what the kernel holds: the next round reads it again.
    this.known =
      lineFailures.length === 0
        ? {
            routes: [...want.routes],
            neighs: want.neighs.map((n) => ({ ...n, mac: n.mac.toLowerCase() })),
            fdb: want.fdb.map((f) => ({ ...f, mac: f.mac.toLowerCase() })),
            policies: [...(want.policies ?? [])],
          }
        : null;
    return { lines: [...bridgeLines.map((l) => `bridge ${l}`), ...ipLines.map((l) => `ip ${l}`)], failures };
  }

  private async readRoutes(): Promise<RouteSpec[]> {
    const { scope } = this.opts;
    const out = JSON.parse((await this.opts.readIp.run(['-4', '-json', 'route', 'show', 'table', 'main'])) || '[]') as JsonRoute[];
    const mine: RouteSpec[] = [];
    for (const r of out) {
      if (!r.dev || !scope.routeDevs.includes(r.dev) || r.dst === 'default') continue;
      let net: IP4Net;
      try {
        net = parseIP4Net(r.dst.includes('/') ? r.dst : `${r.dst}/32`);
      } catch {
        continue;
      }
      // Strictly inside the Network: a route for the whole Network (the udp backend's) is not per-peer state.
      if (net.prefixLen <= scope.network.prefixLen || !ip4NetContains(scope.network, net.ip)) continue;
      mine.push({ dst: r.dst.includes('/') ? r.dst : `${r.dst}/32`, via: r.gateway, dev: r.dev, onlink: r.flags?.includes('onlink') ?? false });
    }
    return mine;
  }

  private async readPolicies(): Promise<XfrmPolicySpec[]> {
    const { network, xfrmReqid } = this.opts.scope;
    if (xfrmReqid === undefined) return [];
    const inside = (net: string) => {
      const n = parseIP4Net(net);
      return n.prefixLen > network.prefixLen && ip4NetContains(network, n.ip);
    };
    const text = await this.opts.readIp.run(['xfrm', 'policy', 'show']);
    return parseXfrmPolicies(text).filter((p) => p.reqid === xfrmReqid && inside(p.src) && inside(p.dst));
  }

  private async readNeighs(): Promise<NeighSpec[]> {
    const all: NeighSpec[] = [];
    for (const dev of this.opts.scope.ownedDevs) {
      const text = await this.opts.readIp.runIgnoringMissing(['-4', '-json', 'neigh', 'show', 'dev', dev, 'nud', 'permanent']);
      for (const n of JSON.parse(text || '[]') as JsonNeigh[]) if (n.lladdr) all.push({ dev, ip: n.dst, mac: n.lladdr.toLowerCase() });
    }
    return all;
  }

  private async readFdb(): Promise<FdbSpec[]> {
    const all: FdbSpec[] = [];
    for (const dev of this.opts.scope.ownedDevs) {
      const text = await this.opts.readBridge.runIgnoringMissing(['-json', 'fdb', 'show', 'dev', dev]);
      // Unicast VTEP entries only: the ones with a remote dst (the device's own MAC entries have none).
      for (const f of JSON.parse(text || '[]') as JsonFdb[]) if (f.dst && f.mac !== '00:00:00:00:00:00') all.push({ dev, mac: f.mac.toLowerCase(), dst: f.dst });
    }
    return all;
  }
}

/** A value for a log line: JSON-quoted, so control characters show, and cut short. */
const shown = (v: unknown) => {
  const t = JSON.stringify(v) ?? String(v);
  return t.length > 60 ? `${t.slice(0, 57)}...` : t;
};

/**
 * The entries of `s` whose every token is canonical, and a refusal for each
 * other one (never a line: a bad token must not reach iproute2).
 */
function validState(s: KernelState): { want: KernelState; refused: { line: string; message: string; origin?: string }[] } {
  const refused: { line: string; message: string; origin?: string }[] = [];
  const check = <T extends { origin?: string }>(items: T[], what: string, problem: (x: T) => string | null): T[] =>
    items.filter((x) => {
      const p = problem(x);
      if (p) refused.push({ line: `${what} ${shown({ ...x, origin: undefined })}`, message: p, ...(x.origin ? { origin: x.origin } : {}) });
      return !p;
    });
  const dev = (d: string) => (isDevName(d) ? null : `device ${shown(d)} is not an interface name`);
  const routes = check(s.routes, 'route', (r) => (!isCanonicalNet4(r.dst) ? `destination ${shown(r.dst)} is not a canonical IPv4 network` : r.via !== undefined && !isCanonicalIP4(r.via) ? `gateway ${shown(r.via)} is not a canonical IPv4 address` : dev(r.dev)));
  const neighs = check(s.neighs, 'neighbour', (n) => (!isCanonicalIP4(n.ip) ? `address ${shown(n.ip)} is not a canonical IPv4 address` : !isCanonicalMac(n.mac.toLowerCase()) ? `MAC ${shown(n.mac)} is not a MAC address` : dev(n.dev)));
  const fdb = check(s.fdb, 'fdb', (f) => (!isCanonicalIP4(f.dst) ? `VTEP ${shown(f.dst)} is not a canonical IPv4 address` : !isCanonicalMac(f.mac.toLowerCase()) ? `MAC ${shown(f.mac)} is not a MAC address` : dev(f.dev)));
  const policies = check(s.policies ?? [], 'xfrm policy', (p) =>
    !isCanonicalNet4(p.src) || !isCanonicalNet4(p.dst) ? `selector ${shown(p.src)} -> ${shown(p.dst)} is not two canonical IPv4 networks` : !isCanonicalIP4(p.tmplSrc) || !isCanonicalIP4(p.tmplDst) ? `tunnel ${shown(p.tmplSrc)} -> ${shown(p.tmplDst)} is not two canonical IPv4 addresses` : null,
  );
  return { want: { routes, neighs, fdb, policies }, refused };
}

/** The lease each line an entry of `want` may produce came from (for reporting a failing line). */
function originsByLine(want: KernelState): Map<string, string> {
  const m = new Map<string, string>();
  for (const r of want.routes) if (r.origin) m.set(`ip route replace ${r.dst}${r.via ? ` via ${r.via}` : ''} dev ${r.dev}${r.onlink ? ' onlink' : ''}`, r.origin);
  for (const n of want.neighs) if (n.origin) m.set(`ip neigh replace ${n.ip} lladdr ${n.mac.toLowerCase()} dev ${n.dev} nud permanent`, n.origin);
  for (const f of want.fdb) if (f.origin) m.set(`bridge fdb replace ${f.mac.toLowerCase()} dev ${f.dev} dst ${f.dst} self permanent`, f.origin);
  for (const p of want.policies ?? []) if (p.origin) m.set(`ip ${policyUpdateLine(p)}`, p.origin);
  return m;
}
