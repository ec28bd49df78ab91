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
import { ip4NetContains, ip6NetContains, parseIP4Net, parseIP6Net, type IP4Net, type IP6Net } from './ipaddr.js';
import type { BatchRunner, IpRunner } from './iproute.js';
import { isCanonicalIP4, isCanonicalIP6, isCanonicalMac, isCanonicalNet4, isCanonicalNet6, isDevName } from './canonical.js';
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
  /** Routes owned: destination strictly inside this network... (absent on an IPv6-only network: no IPv4 state is owned) */
  network?: IP4Net;
  /** IPv6 routes owned: destination strictly inside this network (dual stack), through routeDevs; IPv6 permanent neighbours on ownedDevs. */
  network6?: IP6Net;
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
  /** "kernel" for the routes the kernel makes for an address (an IPv6 /128 on our device): never ours. */
  protocol?: string;
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

/** One kind of entry: the key it is unique by in the kernel, when two are the same, and its lines. */
interface Kind<T> {
  key(x: T): string;
  same(have: T, want: T): boolean;
  put(x: T): string;
  del(x: T): string;
}

const FDB: Kind<FdbSpec> = {
  key: (f) => `${f.dev} ${f.mac}`,
  same: (h, w) => h.dst === w.dst,
  put: (f) => `bridge fdb replace ${f.mac} dev ${f.dev} dst ${f.dst} self permanent`,
  del: (f) => `bridge fdb del ${f.mac} dev ${f.dev} dst ${f.dst} self`,
};
const NEIGH: Kind<NeighSpec> = {
  key: (n) => `${n.dev} ${n.ip}`,
  same: (h, w) => h.mac === w.mac,
  put: (n) => `ip neigh replace ${n.ip} lladdr ${n.mac} dev ${n.dev} nud permanent`,
  del: (n) => `ip neigh del ${n.ip} dev ${n.dev}`,
};
const ROUTE: Kind<RouteSpec> = {
  key: (r) => r.dst,
  same: (h, w) => routeKey(h) === routeKey(w),
  put: (r) => `ip route replace ${r.dst}${r.via ? ` via ${r.via}` : ''} dev ${r.dev}${r.onlink ? ' onlink' : ''}`,
  del: (r) => `ip route del ${r.dst} dev ${r.dev}`,
};
const POLICY: Kind<XfrmPolicySpec> = {
  key: policyKey,
  same: (h, w) => policyUpdateLine(h) === policyUpdateLine(w),
  put: (p) => `ip ${policyUpdateLine(p)}`,
  del: (p) => `ip ${policyDeleteLine(p)}`,
};

/** The state within the scope, each kind indexed by its key (MACs lowercase, as the kernel prints them). */
interface IndexedState {
  fdb: Map<string, FdbSpec>;
  neighs: Map<string, NeighSpec>;
  routes: Map<string, RouteSpec>;
  policies: Map<string, XfrmPolicySpec>;
}

type KindName = keyof IndexedState;
const KIND_NAMES: KindName[] = ['fdb', 'neighs', 'routes', 'policies'];

/** The keys each lease's entries hold, per kind: what a change round of that lease looks at. */
type OriginKeys = Record<KindName, string[]>;

function keysByOrigin(s: IndexedState): Map<string, OriginKeys> {
  const out = new Map<string, OriginKeys>();
  for (const kind of KIND_NAMES) {
    for (const [key, v] of s[kind] as Map<string, { origin?: string }>) {
      if (v.origin === undefined) continue;
      let o = out.get(v.origin);
      if (!o) out.set(v.origin, (o = { fdb: [], neighs: [], routes: [], policies: [] }));
      o[kind].push(key);
    }
  }
  return out;
}

function indexed(s: KernelState): IndexedState {
  const by = <T>(items: T[], k: Kind<T>) => new Map(items.map((x) => [k.key(x), x]));
  return {
    // Copied only when a MAC is not lowercase already (the backends write it lowercase).
    fdb: by(s.fdb.map((f) => (f.mac === f.mac.toLowerCase() ? f : { ...f, mac: f.mac.toLowerCase() })), FDB),
    neighs: by(s.neighs.map((n) => (n.mac === n.mac.toLowerCase() ? n : { ...n, mac: n.mac.toLowerCase() })), NEIGH),
    routes: by(s.routes, ROUTE),
    policies: by(s.policies ?? [], POLICY),
  };
}

/** One line to run, with the lease it is for. */
interface Line {
  text: string;
  origin?: string;
}

/**
 * The lines that turn `have` into `want` for the keys given: a replace for
 * each wanted entry the kernel lacks or holds differently, a delete for
 * each held entry no longer wanted.
 */
function diff<T extends { origin?: string }>(k: Kind<T>, keys: Iterable<string>, have: ReadonlyMap<string, T>, want: (key: string) => T | undefined, puts: Line[], dels: Line[]): void {
  for (const key of keys) {
    const h = have.get(key);
    const w = want(key);
    if (w !== undefined) {
      if (h === undefined || !k.same(h, w)) puts.push({ text: k.put(w), origin: w.origin });
    } else if (h !== undefined) dels.push({ text: k.del(h), origin: h.origin });
  }
}

export class KernelStateApplier {
  /**
   * What the kernel holds after the last round that fully succeeded, or null
   * (read it): a lease-event round diffs against this instead of reading the
   * kernel, so one change costs one small write and no read of 1,000 routes.
   */
  private known: { state: IndexedState; byOrigin: Map<string, OriginKeys> | null } | null = null;

  constructor(private readonly opts: KernelStateApplierOptions) {}

  /**
   * Make the kernel hold exactly `want` within the scope. With `reread`
   * (the first round, the periodic recheck) the kernel is read; otherwise
   * the state the last successful round left is trusted.
   */
  async apply(wanted: KernelState, opts: { reread?: boolean } = {}): Promise<ApplyResult> {
    const { want: valid, refused } = validState(wanted);
    const want = indexed(valid);
    let have = opts.reread === false ? (this.known?.state ?? null) : null;
    if (!have) {
      const [routes, neighs, fdb, policies] = await Promise.all([this.readRoutes(), this.readNeighs(), this.readFdb(), this.readPolicies()]);
      have = indexed({ routes, neighs, fdb, policies });
    }
    const lines = this.linesFor(have, want, null);
    return this.run(lines, refused, want);
  }

  /**
   * A lease-event round: only the leases in `changes` (origin -> its new
   * state, null when gone) changed since the last round. Costs in
   * proportion to those leases, not to all of them: 1,000 node changes
   * against 5,000 nodes are 1,000 small diffs, not 1,000 diffs of 15,000
   * entries. Without a trusted last state it is a full round of `all()`.
   * (Two leases wanting one key, e.g. one MAC: the latest change wins
   * here, the full rounds' order there; the periodic full round settles it.)
   */
  async applyChanges(changes: ReadonlyMap<string, KernelState | null>, all: () => KernelState): Promise<ApplyResult> {
    const known = this.known;
    if (!known) return this.apply(all(), { reread: true });
    const refused: ApplyResult['failures'] = [];
    const next = new Map<string, IndexedState>();
    for (const [origin, st] of changes) {
      const v = validState(st ? tag(st, origin) : { routes: [], neighs: [], fdb: [], policies: [] });
      refused.push(...v.refused);
      next.set(origin, indexed(v.want));
    }
    // Which keys each lease holds: built at the first change round after a full round, then kept up to date.
    const byOrigin = (known.byOrigin ??= keysByOrigin(known.state));
    const lines = this.linesFor(known.state, null, next, byOrigin);
    // The state after this round: the changed leases' old entries out, their new ones in.
    const commit = () => {
      for (const [origin, st] of next) {
        const old = byOrigin.get(origin);
        for (const kind of KIND_NAMES) {
          const m = known.state[kind] as Map<string, { origin?: string }>;
          if (old) for (const key of old[kind]) if (m.get(key)?.origin === origin && !(st[kind] as Map<string, unknown>).has(key)) m.delete(key);
          for (const [key, v] of st[kind] as Map<string, { origin?: string }>) m.set(key, v);
        }
        const keys: OriginKeys = { fdb: [...st.fdb.keys()], neighs: [...st.neighs.keys()], routes: [...st.routes.keys()], policies: [...st.policies.keys()] };
        if (KIND_NAMES.some((k) => keys[k].length > 0)) byOrigin.set(origin, keys);
        else byOrigin.delete(origin);
      }
    };
    try {
      return await this.run(lines, refused, null, commit);
    } catch (err) {
      this.known = null;
      throw err;
    }
  }

  /**
   * The lines of a round, in the order the kernel needs them: FDB and
   * neighbour entries first (an onlink route's gateway resolves through
   * them), route deletes before replaces. Full round: `want` is the whole
   * desired state. Change round: `changed` holds the new state of each
   * changed lease, and only keys those leases held or want are looked at.
   */
  private linesFor(have: IndexedState, want: IndexedState | null, changed: Map<string, IndexedState> | null, byOrigin?: Map<string, OriginKeys>): { bridge: Line[]; ip: Line[] } {
    /** The [replaces, deletes] of one kind. */
    const kinds = <T extends { origin?: string }>(k: Kind<T>, kind: KindName): [Line[], Line[]] => {
      const puts: Line[] = [];
      const dels: Line[] = [];
      const pick = (s: IndexedState) => s[kind] as unknown as Map<string, T>;
      const h = pick(have);
      if (want) {
        const w = pick(want);
        // Every wanted key, then the held ones nobody wants any more (no union set of 15,000 keys).
        diff(k, w.keys(), h, (key) => w.get(key), puts, dels);
        diff(k, [...h.keys()].filter((key) => !w.has(key)), h, () => undefined, puts, dels);
        return [puts, dels];
      }
      const keys = new Set<string>();
      for (const st of changed!.values()) for (const key of pick(st).keys()) keys.add(key);
      // Keys the changed leases held before: an entry of theirs not wanted any more goes.
      for (const origin of changed!.keys()) for (const key of byOrigin?.get(origin)?.[kind] ?? []) keys.add(key);
      diff(
        k,
        keys,
        h,
        (key) => {
          for (const st of changed!.values()) {
            const v = pick(st).get(key);
            if (v !== undefined) return v;
          }
          const cur = h.get(key);
          return cur !== undefined && (cur.origin === undefined || !changed!.has(cur.origin)) ? cur : undefined;
        },
        puts,
        dels,
      );
      return [puts, dels];
    };
    const [fdbPut, fdbDel] = kinds(FDB, 'fdb');
    const [neighPut, neighDel] = kinds(NEIGH, 'neighs');
    const [routePut, routeDel] = kinds(ROUTE, 'routes');
    const [policyPut, policyDel] = kinds(POLICY, 'policies');
    return { bridge: [...fdbPut, ...fdbDel], ip: [...neighPut, ...neighDel, ...routeDel, ...routePut, ...policyDel, ...policyPut] };
  }

  /** Run a round's lines; on success the kernel holds `after` (a full round's want, or what `commit` makes of the known state). */
  private async run(lines: { bridge: Line[]; ip: Line[] }, refused: ApplyResult['failures'], after: IndexedState | null, commit?: () => void): Promise<ApplyResult> {
    const strip = (l: Line, tool: string) => l.text.slice(tool.length + 1);
    const originOf = new Map<string, string | undefined>();
    for (const l of [...lines.bridge, ...lines.ip]) if (l.origin) originOf.set(l.text, l.origin);
    const lineFailures = [
      ...(await this.opts.writeBridge.batch(lines.bridge.map((l) => strip(l, 'bridge')))).map((f) => ({ ...f, line: `bridge ${f.line}`, origin: originOf.get(`bridge ${f.line}`) })),
      ...(await this.opts.writeIp.batch(lines.ip.map((l) => strip(l, 'ip')))).map((f) => ({ ...f, line: `ip ${f.line}`, origin: originOf.get(`ip ${f.line}`) })),
    ];
    for (const f of lineFailures) this.opts.log.error('kernel state change failed', { command: f.line, error: f.message, ...(f.origin ? { lease: f.origin } : {}) });
    for (const f of refused) this.opts.log.error('kernel state entry refused', { entry: f.line, error: f.message, ...(f.origin ? { lease: f.origin } : {}) });
    // After a failing line nobody knows what the kernel holds: the next round reads it again.
    if (lineFailures.length > 0) this.known = null;
    else if (after) this.known = { state: after, byOrigin: null };
    else commit?.();
    return { lines: [...lines.bridge.map((l) => l.text), ...lines.ip.map((l) => l.text)], failures: [...refused, ...lineFailures] };
  }

  /** Our routes of each family the scope owns: strictly inside Network (IPv6Network) through our devices. */
  private async readRoutes(): Promise<RouteSpec[]> {
    const { network, network6 } = this.opts.scope;
    const v6 = network6 ? await this.readRoutesOf('-6', 128, (dst) => inside6(network6, dst)) : [];
    return network ? [...v6, ...(await this.readRoutesOf('-4', 32, (dst) => inside4(network, dst)))] : v6;
  }

  /**
   * One family's routes through our devices whose destination `inside`
   * accepts (a host route has no /len in ip's JSON: /hostLen is added). The
   * kernel's own IPv6 routes for an address (protocol kernel) are never ours.
   */
  private async readRoutesOf(family: '-4' | '-6', hostLen: number, inside: (dst: string) => boolean): Promise<RouteSpec[]> {
    const { routeDevs } = this.opts.scope;
    const out = JSON.parse((await this.opts.readIp.run([family, '-json', 'route', 'show', 'table', 'main'])) || '[]') as JsonRoute[];
    const mine: RouteSpec[] = [];
    for (const r of out) {
      if (!r.dev || !routeDevs.includes(r.dev) || r.dst === 'default' || (family === '-6' && r.protocol === 'kernel')) continue;
      const dst = r.dst.includes('/') ? r.dst : `${r.dst}/${hostLen}`;
      if (inside(dst)) mine.push({ dst, via: r.gateway, dev: r.dev, onlink: r.flags?.includes('onlink') ?? false });
    }
    return mine;
  }

  private async readPolicies(): Promise<XfrmPolicySpec[]> {
    const { network, xfrmReqid } = this.opts.scope;
    if (xfrmReqid === undefined || !network) return [];
    const text = await this.opts.readIp.run(['xfrm', 'policy', 'show']);
    return parseXfrmPolicies(text).filter((p) => p.reqid === xfrmReqid && inside4(network, p.src) && inside4(network, p.dst));
  }

  /** The address families this applier owns state of. */
  private families(): ('-4' | '-6')[] {
    const { network, network6 } = this.opts.scope;
    return [...(network ? (['-4'] as const) : []), ...(network6 ? (['-6'] as const) : [])];
  }

  private async readNeighs(): Promise<NeighSpec[]> {
    const all: NeighSpec[] = [];
    for (const dev of this.opts.scope.ownedDevs) {
      for (const family of this.families()) {
        const text = await this.opts.readIp.runIgnoringMissing([family, '-json', 'neigh', 'show', 'dev', dev, 'nud', 'permanent']);
        for (const n of JSON.parse(text || '[]') as JsonNeigh[]) if (n.lladdr) all.push({ dev, ip: n.dst, mac: n.lladdr.toLowerCase() });
      }
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

/**
 * Whether `dst` lies strictly inside `network`: a route for the whole
 * Network (the udp backend's) is not per-peer state. Unparsable text: no.
 */
function inside4(network: IP4Net, dst: string): boolean {
  try {
    const net = parseIP4Net(dst);
    return net.prefixLen > network.prefixLen && ip4NetContains(network, net.ip);
  } catch {
    return false;
  }
}

function inside6(network: IP6Net, dst: string): boolean {
  try {
    const net = parseIP6Net(dst);
    return net.prefixLen > network.prefixLen && ip6NetContains(network, net.ip);
  } catch {
    return false;
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
  // Each address in its one canonical form, of one family: an IPv4 route has an IPv4 gateway, an IPv6 route an IPv6 one.
  const route = (r: RouteSpec): string | null => {
    const v6 = r.dst.includes(':');
    if (!(v6 ? isCanonicalNet6(r.dst) : isCanonicalNet4(r.dst))) return `destination ${shown(r.dst)} is not a canonical IPv${v6 ? 6 : 4} network`;
    if (r.via !== undefined && !(v6 ? isCanonicalIP6(r.via) : isCanonicalIP4(r.via))) return `gateway ${shown(r.via)} is not a canonical IPv${v6 ? 6 : 4} address`;
    return dev(r.dev);
  };
  const ip = (a: string) => isCanonicalIP4(a) || isCanonicalIP6(a);
  const routes = check(s.routes, 'route', route);
  const neighs = check(s.neighs, 'neighbour', (n) => (!ip(n.ip) ? `address ${shown(n.ip)} is not a canonical IP address` : !isCanonicalMac(n.mac.toLowerCase()) ? `MAC ${shown(n.mac)} is not a MAC address` : dev(n.dev)));
  const fdb = check(s.fdb, 'fdb', (f) => (!ip(f.dst) ? `VTEP ${shown(f.dst)} is not a canonical IP address` : !isCanonicalMac(f.mac.toLowerCase()) ? `MAC ${shown(f.mac)} is not a MAC address` : dev(f.dev)));
  const policies = check(s.policies ?? [], 'xfrm policy', (p) =>
    !isCanonicalNet4(p.src) || !isCanonicalNet4(p.dst) ? `selector ${shown(p.src)} -> ${shown(p.dst)} is not two canonical IPv4 networks` : !isCanonicalIP4(p.tmplSrc) || !isCanonicalIP4(p.tmplDst) ? `tunnel ${shown(p.tmplSrc)} -> ${shown(p.tmplDst)} is not two canonical IPv4 addresses` : null,
  );
  return { want: { routes, neighs, fdb, policies }, refused };
}

/** `s` with every entry tagged with the lease it is for. */
function tag(s: KernelState, origin: string): KernelState {
  return {
    routes: s.routes.map((x) => ({ ...x, origin })),
    neighs: s.neighs.map((x) => ({ ...x, origin })),
    fdb: s.fdb.map((x) => ({ ...x, origin })),
    policies: (s.policies ?? []).map((x) => ({ ...x, origin })),
  };
}
