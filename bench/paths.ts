/**
 * The data paths the bench compares. Each setup builds a fresh pair of
 * namespaces (so no path inherits devices, routes or conntrack state from
 * another) and returns where the client should send traffic.
 */
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHosts, registerCleanup, run, waitFor, type HostSet, type TestHost } from '../test/helpers/netns.js';
import { measureLatency } from './latency.js';

export type PathId = 'veth' | 'vxlan' | 'ftvxlan' | 'vxlan6' | 'ftvxlan6' | 'udp' | 'flannel-udp' | 'ftwg' | 'wggo';
export const ALL_PATHS: PathId[] = ['veth', 'vxlan', 'ftvxlan', 'vxlan6', 'ftvxlan6', 'udp', 'flannel-udp', 'ftwg', 'wggo'];
export const PATH_LABELS: Record<PathId, string> = {
  veth: 'bare veth',
  vxlan: 'kernel VXLAN',
  ftvxlan: 'flannel-ts vxlan',
  vxlan6: 'kernel VXLAN over IPv6',
  ftvxlan6: 'flannel-ts vxlan over IPv6',
  udp: 'flannel-ts udp',
  'flannel-udp': "flannel's own udp (v0.19.2)",
  ftwg: 'flannel-ts wireguard (userspace)',
  wggo: 'wireguard-go',
};

/** The path cannot be measured on this checkout or machine; reported, not fatal. */
export class Unavailable extends Error {}

export interface PathSetup {
  client: TestHost;
  server: TestHost;
  /** Address inside `server` that the client targets. */
  targetIp: string;
  /** Processes whose CPU time is charged to the path (the flanneld daemons). */
  daemonPids: number[];
  notes: string[];
  teardown(): Promise<void>;
}

export type Progress = (msg: string) => void;

const NS_PREFIX = 'ftbench';

/** The underlay's IPv6 /64 for the IPv6 paths: host i gets ::i+1. */
const UNDERLAY6 = '2001:db8:77::';

/** Two hosts on one veth pair; `ipv6` also gives each an underlay IPv6 address (no DAD wait). */
async function pair(ipv6 = false): Promise<HostSet> {
  const set = await createHosts(2, { prefix: NS_PREFIX, topology: 'pair' });
  if (ipv6) {
    for (const [i, h] of set.hosts.entries()) {
      const r = await h.exec(['ip', '-6', 'addr', 'add', `${UNDERLAY6}${i + 1}/64`, 'dev', h.iface, 'nodad']);
      if (r.code !== 0) {
        await set.destroy();
        throw new Unavailable(`no IPv6 on the underlay: ${r.stderr.trim()}`);
      }
    }
  }
  return set;
}

function basic(set: HostSet, targetIp: string, notes: string[], daemonPids: number[] = [], extra?: () => void): PathSetup {
  return {
    client: set.hosts[0]!,
    server: set.hosts[1]!,
    targetIp,
    daemonPids,
    notes,
    teardown: async () => {
      await set.destroy();
      extra?.();
    },
  };
}

export async function setupVeth(): Promise<PathSetup> {
  const set = await pair();
  return basic(set, set.hosts[1]!.ip, ['direct between the veth addresses']);
}

export const VXLAN = { vni: 42, port: 4789, mtu: 1450, net24: '10.77.0' };

export async function setupVxlan(): Promise<PathSetup> {
  const set = await pair();
  try {
    const [a, b] = set.hosts as [TestHost, TestHost];
    for (const [i, h, peer] of [[1, a, b], [2, b, a]] as const) {
      const steps = [
        ['ip', 'link', 'add', 'vx0', 'type', 'vxlan', 'id', String(VXLAN.vni), 'dstport', String(VXLAN.port), 'local', h.ip, 'dev', h.iface],
        ['ip', 'link', 'set', 'vx0', 'mtu', String(VXLAN.mtu), 'up'],
        ['ip', 'addr', 'add', `${VXLAN.net24}.${i}/24`, 'dev', 'vx0'],
        // All-zero MAC entry: flood unknown destinations (including ARP) to the peer.
        ['bridge', 'fdb', 'append', '00:00:00:00:00:00', 'dev', 'vx0', 'dst', peer.ip],
      ];
      for (const s of steps) {
        const r = await h.exec(s);
        if (r.code !== 0) throw new Unavailable(`${s.join(' ')}: ${r.stderr.trim()}`);
      }
    }
    return basic(set, `${VXLAN.net24}.2`, [`vx0 vni ${VXLAN.vni} mtu ${VXLAN.mtu}, static all-zero FDB to the peer`]);
  } catch (e) {
    await set.destroy();
    throw e;
  }
}

/**
 * Kernel VXLAN over an IPv6 underlay, set up by hand as the reference for
 * flannel-ts's flannel-v6.<VNI>: same MTU (1500 - 70, the IPv6 outer
 * header is 20 bytes longer), overlay addresses IPv6 too.
 */
export const VXLAN6 = { vni: 43, port: 4789, mtu: 1430, net64: 'fd77::' };

export async function setupVxlan6(): Promise<PathSetup> {
  const set = await pair(true);
  try {
    const [a, b] = set.hosts as [TestHost, TestHost];
    for (const [i, h, peer] of [[1, a, b], [2, b, a]] as const) {
      const steps = [
        ['ip', 'link', 'add', 'vx6', 'type', 'vxlan', 'id', String(VXLAN6.vni), 'dstport', String(VXLAN6.port), 'local', `${UNDERLAY6}${i}`, 'dev', h.iface],
        ['ip', 'link', 'set', 'vx6', 'mtu', String(VXLAN6.mtu), 'up'],
        ['ip', '-6', 'addr', 'add', `${VXLAN6.net64}${i}/64`, 'dev', 'vx6', 'nodad'],
        ['bridge', 'fdb', 'append', '00:00:00:00:00:00', 'dev', 'vx6', 'dst', `${UNDERLAY6}${peer === b ? 2 : 1}`],
      ];
      for (const s of steps) {
        const r = await h.exec(s);
        if (r.code !== 0) throw new Unavailable(`${s.join(' ')}: ${r.stderr.trim()}`);
      }
    }
    return basic(set, `${VXLAN6.net64}2`, [`vx6 vni ${VXLAN6.vni} mtu ${VXLAN6.mtu} over ${UNDERLAY6}/64, static all-zero FDB to the peer`]);
  } catch (e) {
    await set.destroy();
    throw e;
  }
}

export const FLANNEL_NETWORK_CONFIG = '{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}';
const networkConfig = (backend: string) => FLANNEL_NETWORK_CONFIG.replace('"udp"', `"${backend}"`);
/** An IPv6-only network (flannel's EnableIPv4 false): the IPv6 overlay alone. */
const IPV6_ONLY_CONFIG = (backend: string) => JSON.stringify({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:5::/56', Backend: { Type: backend } });

/** KEY=VALUE lines of a flannel subnet.env file. */
export function parseSubnetEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^\s*([A-Z0-9_]+)=(.*?)\s*$/.exec(line);
    if (m) out[m[1]!] = m[2]!.replace(/^"(.*)"$/, '$1');
  }
  return out;
}

/** Network address of an IPv4 CIDR: "10.5.81.1/24" -> "10.5.81.0". */
export function networkAddress(cidr: string): string {
  const [ipPart, lenPart] = cidr.split('/');
  const octets = (ipPart ?? '').split('.').map(Number);
  const len = Number(lenPart ?? 32);
  if (octets.length !== 4 || octets.some((o) => !(o >= 0 && o <= 255)) || !(len >= 0 && len <= 32)) throw new Error(`bad CIDR ${cidr}`);
  const n = octets.reduce((acc, o) => acc * 256 + o, 0);
  const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
  const net = (n & mask) >>> 0;
  return [24, 16, 8, 0].map((s) => (net >>> s) & 255).join('.');
}

/** Addresses of one family on `dev` in the host's namespace, from `ip -j addr`. */
async function deviceAddresses(h: TestHost, dev: string, family: '-4' | '-6' = '-4'): Promise<string[]> {
  const r = await h.exec(['ip', '-j', family, 'addr', 'show', 'dev', dev]);
  if (r.code !== 0) return [];
  const doc = JSON.parse(r.stdout) as { addr_info?: { local?: string }[] }[];
  return doc.flatMap((l) => (l.addr_info ?? []).map((a) => a.local ?? '')).filter(Boolean);
}

function tail(file: string, lines = 8): string {
  try {
    return readFileSync(file, 'utf8').trim().split('\n').slice(-lines).join(' | ');
  } catch {
    return '(no log)';
  }
}

/** Repository root, from dist/bench/paths.js. */
export function repoRoot(): string {
  return new URL('../../', import.meta.url).pathname;
}

/**
 * Two flanneld daemons (udp backend) sharing one embedded local store.
 *
 * Target choice: the daemon puts the lease's network address on flannel0
 * (e.g. 10.5.81.0/32) and routes the whole 10.5.0.0/16 into flannel0, so the
 * peer's flannel0 address is reachable end-to-end through both daemons with
 * no extra configuration. We read that address from the device rather than
 * assuming .0 or .1, so the bench still works if the daemon's choice changes;
 * the network address of FLANNEL_SUBNET is only the fallback. Adding the .1
 * to lo would also work but adds setup that a real node would not have.
 */
export interface FlannelOptions {
  startTimeoutMs?: number;
  /** Options for node itself, before the script (e.g. --cpu-prof; bench/profile.ts). */
  nodeArgs?: string[];
  /** Extra flanneld flags (e.g. --healthz-port to scrape /metrics). */
  daemonArgs?: string[];
  /** Extra environment for the daemons (e.g. FLANNEL_UDP_OFFLOAD=0). */
  env?: Record<string, string>;
  /** Backend of the daemons (default udp). */
  backend?: 'udp' | 'vxlan' | 'wireguard';
  /** An IPv6-only network over an IPv6 underlay (the target is the peer's IPv6 overlay address). */
  ipv6?: boolean;
  /**
   * Where the daemons keep leases: the embedded store (default), or an etcd in the first host's
   * namespace, as flannel's own pair runs (setupFlannelRef), for a comparison on equal terms.
   */
  store?: 'local' | 'etcd';
}

export async function setupFlannel(progress: Progress, opts: FlannelOptions = {}): Promise<PathSetup> {
  const root = repoRoot();
  const flanneld = join(root, 'bin', 'flanneld');
  const flannelctl = join(root, 'bin', 'flannelctl');
  if (!existsSync(flanneld)) throw new Unavailable('bin/flanneld not found in this checkout');
  if (!existsSync(flannelctl)) throw new Unavailable('bin/flannelctl not found in this checkout');

  const dir = mkdtempSync(join(tmpdir(), 'ftbench-'));
  const removeDir = () => rmSync(dir, { recursive: true, force: true });
  const unregisterDir = registerCleanup(removeDir);
  const cleanupDir = () => {
    removeDir();
    unregisterDir();
  };
  const node = process.execPath;

  const config = opts.ipv6 ? IPV6_ONLY_CONFIG(opts.backend ?? 'udp') : networkConfig(opts.backend ?? 'udp');
  const set = await pair(opts.ipv6);
  const subnetKey = opts.ipv6 ? 'FLANNEL_IPV6_SUBNET' : 'FLANNEL_SUBNET';
  let etcd: { endpoint: string; cleanup(): Promise<void> } | null = null;
  try {
    if (opts.store === 'etcd') {
      const { startEtcd } = await import('../test/helpers/etcd.js');
      etcd = await startEtcd({ netns: set.hosts[0]!.ns, host: set.hosts[0]!.ip });
    }
    const storeArgs = etcd ? ['--etcd-endpoints', etcd.endpoint] : ['--local-store', dir];
    const put = await set.hosts[0]!.exec([node, flannelctl, ...storeArgs, 'put', '/coreos.com/network/config', config], { timeoutMs: 20000 });
    if (put.code !== 0) throw new Unavailable(`flannelctl put failed (exit ${put.code}): ${(put.stderr || put.stdout).trim().split('\n').slice(-3).join(' | ')}`);
    const daemons = set.hosts.map((h, i) => {
      const n = i + 1;
      const logFile = join(dir, `flanneld${n}.log`);
      const fd = openSync(logFile, 'a');
      const subnetFile = join(dir, `host${n}.env`);
      const args = [node, ...(opts.nodeArgs ?? []), flanneld, ...storeArgs, '--iface', h.iface, '--subnet-file', subnetFile, '--healthz-port', '0', ...(opts.daemonArgs ?? [])];
      // wireguard: each daemon its own key file and API socket (both hosts share this machine's /run).
      const own = opts.backend === 'wireguard' ? { WIREGUARD_KEY_FILE: join(dir, `wgkey${n}`), FLANNEL_WIREGUARD_SOCKET_DIR: join(dir, `wg${n}`) } : {};
      const child = h.spawn(args, {
        stdio: ['ignore', fd, fd],
        cwd: root,
        env: { ...process.env, ...opts.env, ...own },
      });
      closeSync(fd); // the child holds its own copy
      progress(`${opts.backend ?? 'udp'}: started flanneld in ${h.ns} pid=${child.pid}`);
      return { host: h, child, logFile, subnetFile };
    });

    const subnets: string[] = [];
    for (const d of daemons) {
      // The poll returns (rather than throws) on daemon exit: waitFor retries
      // thrown errors, and a dead daemon will not come back.
      const got = await waitFor(
        () => {
          if (d.child.exitCode !== null || d.child.signalCode !== null) return { exited: String(d.child.exitCode ?? d.child.signalCode) };
          if (!existsSync(d.subnetFile)) return null;
          const subnet = parseSubnetEnv(readFileSync(d.subnetFile, 'utf8'))[subnetKey];
          return subnet ? { subnet } : null;
        },
        opts.startTimeoutMs ?? 30000,
        d.subnetFile,
      ).catch((e: unknown) => {
        throw new Unavailable(`no ${subnetKey} from flanneld in ${d.host.ns}: ${(e as Error).message}; log: ${tail(d.logFile)}`);
      });
      if ('exited' in got) throw new Unavailable(`flanneld in ${d.host.ns} exited (${got.exited}): ${tail(d.logFile)}`);
      subnets.push(got.subnet);
    }
    progress(`${opts.backend ?? 'udp'}: leases ${subnets.join(', ')}`);

    const server = daemons[1]!;
    const device = opts.backend === 'vxlan' ? (opts.ipv6 ? 'flannel-v6.1' : 'flannel.1') : opts.backend === 'wireguard' ? 'flannel-wg' : 'flannel0';
    const onDevice = (await deviceAddresses(server.host, device, opts.ipv6 ? '-6' : '-4')).find((a) => a.startsWith(opts.ipv6 ? 'fd00:5:' : '10.5.'));
    const targetIp = onDevice ?? (opts.ipv6 ? subnets[1]!.split('/')[0]!.replace(/1$/, '') : networkAddress(subnets[1]!));
    const notes = [`leases ${subnets.join(', ')}`, `target = peer ${device} address ${targetIp}${onDevice ? '' : ` (from FLANNEL_SUBNET; ${device} not found)`}`];

    // The daemons learn each other's lease through the store's watch; wait
    // until the overlay actually carries packets before measuring.
    try {
      await waitFor(async () => (await measureLatency(daemons[0]!.host, server.host, targetIp, 1, 50)).received > 0, 20000, `overlay reachability of ${targetIp}`, 250);
    } catch (e) {
      throw new Unavailable(`${(e as Error).message}; logs: ${tail(daemons[0]!.logFile, 4)} || ${tail(server.logFile, 4)}`);
    }
    if (etcd) notes.push('leases in an etcd in the client namespace');
    const stopEtcd = etcd?.cleanup;
    return basic(set, targetIp, notes, daemons.map((d) => d.child.pid!).filter(Boolean), () => {
      cleanupDir();
      void stopEtcd?.();
    });
  } catch (e) {
    await set.destroy();
    await etcd?.cleanup();
    cleanupDir();
    throw e;
  }
}

export const WGGO = { net24: '10.78.0', mtu: 1420, port: 51820 };

/**
 * Debian's wireguard-go between the two namespaces, configured with wg,
 * the reference for our userspace WireGuard: each side an interface of
 * its own name (its control socket lives in the machine-wide
 * /var/run/wireguard), MTU 1420 as flannel's.
 */
export async function setupWireguardGo(progress: Progress): Promise<PathSetup> {
  for (const bin of ['wireguard-go', 'wg']) if (!(await run('sh', ['-c', `command -v ${bin}`])).stdout.trim()) throw new Unavailable(`${bin} is not installed`);
  const set = await pair();
  const dir = mkdtempSync(join(tmpdir(), 'ftbench-wggo-'));
  const pids: number[] = [];
  try {
    const names = set.hosts.map((_, i) => `ftbwg${process.pid % 1000}${i}`);
    const keys: { priv: string; pub: string }[] = [];
    for (const h of set.hosts) {
      const priv = (await h.exec(['wg', 'genkey'], { check: true })).stdout.trim();
      const pub = (await h.exec(['sh', '-c', `printf '%s\\n' '${priv}' | wg pubkey`], { check: true })).stdout.trim();
      keys.push({ priv, pub });
    }
    for (const [i, h] of set.hosts.entries()) {
      const name = names[i]!;
      const child = h.spawn(['wireguard-go', '-f', name], { stdio: 'ignore', env: { ...process.env, WG_I_PREFER_BUGGY_USERSPACE_TO_POLISHED_KMOD: '1' } });
      pids.push(child.pid!);
      await waitFor(async () => (await h.exec(['ip', 'link', 'show', name])).code === 0, 10_000, `${name} up`);
      const keyFile = join(dir, `key${i}`);
      await h.exec(['sh', '-c', `umask 077; printf '%s\\n' '${keys[i]!.priv}' > ${keyFile}`], { check: true });
      const peer = set.hosts[1 - i]!;
      await h.exec(['wg', 'set', name, 'private-key', keyFile, 'listen-port', String(WGGO.port), 'peer', keys[1 - i]!.pub, 'endpoint', `${peer.ip}:${WGGO.port}`, 'allowed-ips', `${WGGO.net24}.${2 - i}/32`], { check: true });
      await h.exec(['ip', 'addr', 'add', `${WGGO.net24}.${i + 1}/24`, 'dev', name], { check: true });
      await h.exec(['ip', 'link', 'set', name, 'mtu', String(WGGO.mtu), 'up'], { check: true });
      progress(`wggo: wireguard-go ${name} in ${h.ns} pid=${child.pid}`);
    }
    const targetIp = `${WGGO.net24}.2`;
    await waitFor(async () => (await measureLatency(set.hosts[0]!, set.hosts[1]!, targetIp, 1, 50)).received > 0, 20000, `wireguard-go reachability of ${targetIp}`, 250);
    const version = (await run('wireguard-go', ['--version'])).stdout.trim().split('\n')[0] ?? '';
    return basic(set, targetIp, [`${version}, mtu ${WGGO.mtu}`], pids, () => rmSync(dir, { recursive: true, force: true }));
  } catch (e) {
    await set.destroy();
    rmSync(dir, { recursive: true, force: true });
    throw e instanceof Unavailable ? e : new Unavailable((e as Error).message);
  }
}

/**
 * flannel's own udp backend (its C proxy), the program our udp backend
 * replaces: flannel's flanneld v0.19.2 (FLANNELD_REF, built by
 * ../shared/tools/build-reference-flanneld.sh) in both hosts, on an etcd
 * with TLS and client certificates in the first host's namespace (flannel
 * v0.19 talks to etcd v3 only so; etcd idles during the measurement).
 */
export async function setupFlannelRef(progress: Progress): Promise<PathSetup> {
  try {
    return await setupFlannelRefOnce(progress);
  } catch (e) {
    // About one pair in ten of flannel's own daemons never carries a packet here (one of them has
    // not learnt the other's lease, and flannel v0.19.2 does not recover): a fresh pair once more.
    if (!(e instanceof Unavailable) || !/overlay reachability/.test(e.message)) throw e;
    progress(`flannel-udp: ${e.message.slice(0, 120)}...; setting up a fresh pair`);
    return setupFlannelRefOnce(progress);
  }
}

async function setupFlannelRefOnce(progress: Progress): Promise<PathSetup> {
  const ref = process.env.FLANNELD_REF ?? '';
  if (!ref || !existsSync(ref)) throw new Unavailable("FLANNELD_REF does not name flannel's flanneld v0.19.2 (bash ../shared/tools/build-reference-flanneld.sh builds it)");
  const { startEtcd } = await import('../test/helpers/etcd.js');
  const root = repoRoot();
  const dir = mkdtempSync(join(tmpdir(), 'ftbench-ref-'));
  const set = await pair();
  let etcd: Awaited<ReturnType<typeof startEtcd>> | null = null;
  const cleanup = async () => {
    await etcd?.cleanup();
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const [h1, h2] = set.hosts as [TestHost, TestHost];
    etcd = await startEtcd({ netns: h1.ns, host: h1.ip, tls: true });
    const tls = ['--etcd-cafile', etcd.caFile!, '--etcd-certfile', etcd.certFile!, '--etcd-keyfile', etcd.keyFile!];
    const put = await h1.exec([process.execPath, join(root, 'bin', 'flannelctl'), '--etcd-endpoints', etcd.endpoint, ...tls, 'put', '/coreos.com/network/config', FLANNEL_NETWORK_CONFIG], { timeoutMs: 20000 });
    if (put.code !== 0) throw new Unavailable(`flannelctl put failed: ${(put.stderr || put.stdout).trim()}`);
    // One after the other: started together, flannel v0.19.2's second daemon sometimes never
    // learns the first one's lease (in 3 of 6 setups here, created between its listing and its
    // watch), and the pair never carries a packet. Started in turn, the second lists the first.
    const daemons: { host: TestHost; child: ReturnType<TestHost['spawn']>; logFile: string; subnetFile: string }[] = [];
    for (const [i, h] of set.hosts.entries()) {
      const logFile = join(dir, `flanneld${i + 1}.log`);
      const fd = openSync(logFile, 'a');
      const subnetFile = join(dir, `host${i + 1}.env`);
      const child = h.spawn([ref, '--etcd-endpoints', etcd!.endpoint, ...tls, '--iface', h.iface, '--subnet-file', subnetFile], { stdio: ['ignore', fd, fd] });
      closeSync(fd);
      progress(`flannel-udp: started flannel's flanneld in ${h.ns} pid=${child.pid}`);
      const d = { host: h, child, logFile, subnetFile };
      daemons.push(d);
      await waitFor(() => (d.child.exitCode !== null ? Promise.reject(new Error(`exited: ${tail(d.logFile)}`)) : existsSync(d.subnetFile) ? true : null), 30000, d.subnetFile).catch((e: Error) => {
        throw new Unavailable(`flannel's flanneld in ${d.host.ns}: ${e.message}`);
      });
    }
    const targetIp = (await deviceAddresses(h2, 'flannel0')).find((a) => a.startsWith('10.5.'));
    if (!targetIp) throw new Unavailable(`no flannel0 address in ${h2.ns}: ${tail(daemons[1]!.logFile)}`);
    await waitFor(async () => (await measureLatency(h1, h2, targetIp, 1, 50)).received > 0, 30000, `overlay reachability of ${targetIp}`, 250).catch((e: Error) => {
      throw new Unavailable(`${e.message}; logs: ${tail(daemons[0]!.logFile, 4)} || ${tail(daemons[1]!.logFile, 4)}`);
    });
    return basic(set, targetIp, [`flannel's own flanneld v0.19.2 (${ref})`, `target = peer flannel0 address ${targetIp}`], daemons.map((d) => d.child.pid!).filter(Boolean), () => void cleanup());
  } catch (e) {
    await set.destroy();
    await cleanup();
    throw e;
  }
}
