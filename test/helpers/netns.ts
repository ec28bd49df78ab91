/**
 * Simulated hosts as network namespaces on this machine, for e2e tests and
 * the benchmark. Needs root and iproute2.
 *
 * Everything created here is tracked in a process-wide registry so that an
 * interrupted run (Ctrl-C, SIGTERM, an uncaught exception) still removes its
 * namespaces and kills the processes it started: left-over namespaces would
 * keep addresses and ports busy for the next run.
 */
import { spawn as spawnChild, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { readdirSync } from 'node:fs';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ExecOptions {
  /** Kill the command after this many ms (code is then -1). */
  timeoutMs?: number;
  /** Written to the command's stdin, which is then closed. */
  input?: string;
  /** Throw when the exit code is not 0. */
  check?: boolean;
  /** The command's environment (default: ours). */
  env?: NodeJS.ProcessEnv;
}

export interface TestHost {
  /** Network namespace name. */
  ns: string;
  /** The host's link to the others, inside ns. */
  iface: string;
  /** Address with prefix on iface, e.g. "192.0.2.1/24". */
  addr: string;
  /** Address without prefix, e.g. "192.0.2.1". */
  ip: string;
  /** Runs a command inside the namespace and collects its output. */
  exec(args: string[], opts?: ExecOptions): Promise<ExecResult>;
  /** Starts a long-running command inside the namespace; destroy() kills it. */
  spawn(args: string[], opts?: SpawnOptions): ChildProcess;
}

export interface HostSet {
  hosts: TestHost[];
  /** The namespace holding the bridge, for topology 'bridge'. */
  switchNs?: string;
  /** Kills processes and deletes the namespaces. Safe to call twice. */
  destroy(): Promise<void>;
}

export interface CreateHostsOptions {
  /** Start of every namespace name; keep it short and [a-z0-9-]. */
  prefix?: string;
  /** 'pair': two hosts on one veth pair; 'bridge': one veth per host into a bridge. */
  topology?: 'pair' | 'bridge';
  mtu?: number;
  /** First three octets of the /24 the hosts share; host i gets .i+1. */
  net24?: string;
}

const IFACE = 'eth0';

/* ---------- process-wide cleanup registry ---------- */

type SyncCleanup = () => void;
const cleanups = new Set<SyncCleanup>();
let hooksInstalled = false;

function runAllCleanupsSync(): void {
  for (const fn of [...cleanups]) {
    cleanups.delete(fn);
    try {
      fn();
    } catch {
      // Best effort: one failing step must not stop the others.
    }
  }
}

function onSignal(sig: NodeJS.Signals): void {
  runAllCleanupsSync();
  process.removeListener('SIGINT', onSignal);
  process.removeListener('SIGTERM', onSignal);
  // Re-raise so the exit status says "killed by signal" as the caller expects;
  // if someone else also listens, leave the decision to exit to them.
  if (process.listenerCount(sig) === 0) process.kill(process.pid, sig);
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  process.on('exit', runAllCleanupsSync);
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
}

/**
 * Registers a synchronous cleanup step that runs on exit, SIGINT or SIGTERM.
 * Returns a function that unregisters it (call that after cleaning up normally).
 */
export function registerCleanup(fn: SyncCleanup): () => void {
  installHooks();
  cleanups.add(fn);
  return () => {
    cleanups.delete(fn);
  };
}

/* ---------- small utilities ---------- */

function ipSync(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

function tryIpSync(args: string[]): void {
  try {
    ipSync(args);
  } catch {
    // The object may already be gone.
  }
}

function nsPids(ns: string): number[] {
  try {
    const out = execFileSync('ip', ['netns', 'pids', ns], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    return out.split(/\s+/).filter(Boolean).map(Number).filter((n) => n > 0 && n !== process.pid);
  } catch {
    return [];
  }
}

function killQuietly(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already exited.
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Kills every process in the namespaces, then deletes them (their veths go too). */
function deleteNamespacesSync(namespaces: string[]): void {
  for (const ns of namespaces) for (const pid of nsPids(ns)) killQuietly(pid, 'SIGKILL');
  for (const ns of namespaces) tryIpSync(['netns', 'del', ns]);
}

export function listNamespaces(): string[] {
  try {
    return readdirSync('/var/run/netns');
  } catch {
    return [];
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/**
 * Polls fn until it returns a truthy value (returned) or timeoutMs passes
 * (throws, with the last error fn threw if any).
 */
export async function waitFor<T>(fn: () => T | Promise<T>, timeoutMs: number, what = 'condition', intervalMs = 50): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v as NonNullable<T>;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() >= deadline) {
      const why = lastErr instanceof Error ? `: ${lastErr.message}` : '';
      throw new Error(`timed out after ${timeoutMs}ms waiting for ${what}${why}`);
    }
    await sleep(intervalMs);
  }
}

/** Runs a command (in the root namespace) and collects its output; never throws unless check. */
export function run(cmd: string, args: string[], opts: ExecOptions & { onSpawn?: (c: ChildProcess) => void } = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawnChild(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], ...(opts.env ? { env: opts.env } : {}) });
    opts.onSpawn?.(child);
    let stdout = '';
    let stderr = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin!.on('error', () => {}); // the command may exit before reading
    child.stdin!.end(opts.input ?? '');
    let timedOut = false;
    const timer = opts.timeoutMs
      ? setTimeout(() => {
          timedOut = true;
          child.kill('SIGKILL');
        }, opts.timeoutMs)
      : undefined;
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      const res = { code: timedOut ? -1 : code ?? -1, stdout, stderr: timedOut ? stderr + `\n(timed out after ${opts.timeoutMs}ms)` : stderr };
      if (opts.check && res.code !== 0) {
        reject(new Error(`${cmd} ${args.join(' ')} exited ${res.code}: ${res.stderr.trim() || res.stdout.trim()}`));
      } else resolve(res);
    });
  });
}

/** `ip ...` in the root namespace, throwing on failure. */
async function ip(args: string[]): Promise<void> {
  await run('ip', args, { check: true });
}

/** Adds an address to a device in the host's namespace (default: its link). */
export async function addAddress(host: TestHost, cidr: string, dev = host.iface): Promise<void> {
  await ip(['-n', host.ns, 'addr', 'add', cidr, 'dev', dev]);
}

/**
 * Whether something in the host's namespace listens on a TCP port (or has a
 * UDP socket bound to it), from /proc/net: works for servers whose stdout is
 * block-buffered and so cannot announce readiness.
 */
export async function isListening(host: TestHost, port: number, proto: 'tcp' | 'udp' = 'tcp'): Promise<boolean> {
  const r = await host.exec(['cat', `/proc/net/${proto}`, `/proc/net/${proto}6`]);
  const hexPort = port.toString(16).toUpperCase().padStart(4, '0');
  // Columns: sl local_address rem_address st ...; TCP LISTEN is state 0A, UDP sockets show 07.
  const want = proto === 'tcp' ? '0A' : '07';
  return r.stdout.split('\n').some((line) => {
    const f = line.trim().split(/\s+/);
    return f[1]?.endsWith(`:${hexPort}`) === true && f[3] === want;
  });
}

/* ---------- stale namespace sweep ---------- */

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/**
 * Deletes namespaces that an earlier run with this prefix left behind after
 * being SIGKILLed (when no exit hook could run). A namespace is stale when the
 * pid embedded in its name is no longer alive.
 */
export function sweepStale(prefix: string): string[] {
  const re = new RegExp(`^${escapeRe(prefix)}-(\\d+)-\\d+-`);
  const stale = listNamespaces().filter((ns) => {
    const m = re.exec(ns);
    return m !== null && Number(m[1]) !== process.pid && !isAlive(Number(m[1]));
  });
  deleteNamespacesSync(stale);
  return stale;
}

/* ---------- host creation ---------- */

let setSeq = 0;

export async function createHosts(n: number, opts: CreateHostsOptions = {}): Promise<HostSet> {
  const prefix = opts.prefix ?? 'ft';
  const topology = opts.topology ?? (n === 2 ? 'pair' : 'bridge');
  const net24 = opts.net24 ?? '192.0.2';
  if (!/^[a-z0-9-]+$/i.test(prefix)) throw new Error(`bad namespace prefix ${JSON.stringify(prefix)}`);
  if (topology === 'pair' && n !== 2) throw new Error(`topology 'pair' needs exactly 2 hosts, got ${n}`);
  if (n < 1 || n > 250) throw new Error(`host count out of range: ${n}`);

  sweepStale(prefix);
  const base = `${prefix}-${process.pid}-${++setSeq}`;
  const hostNs = Array.from({ length: n }, (_, i) => `${base}-h${i + 1}`);
  const switchNs = topology === 'bridge' ? `${base}-sw` : undefined;
  const allNs = switchNs ? [...hostNs, switchNs] : [...hostNs];

  const children = new Set<ChildProcess>();
  const track = (c: ChildProcess) => {
    children.add(c);
    c.once('exit', () => children.delete(c));
  };

  let destroyed = false;
  const destroySync = () => {
    if (destroyed) return;
    destroyed = true;
    for (const c of children) if (c.pid) killQuietly(c.pid, 'SIGKILL');
    deleteNamespacesSync(allNs);
  };
  const unregister = registerCleanup(destroySync);

  const destroy = async () => {
    if (destroyed) return;
    // Give our own children a chance to exit cleanly (flushing logs, removing
    // their own state) before the hard kill in destroySync.
    const live = [...children].filter((c) => c.exitCode === null && c.signalCode === null);
    for (const c of live) c.kill('SIGTERM');
    await Promise.race([Promise.all(live.map((c) => new Promise((r) => (c.exitCode !== null || c.signalCode !== null ? r(null) : c.once('exit', r))))), sleep(2000)]);
    destroySync();
    unregister();
  };

  try {
    for (const ns of allNs) {
      await ip(['netns', 'add', ns]);
      await ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    }
    const mtuArgs = opts.mtu ? ['mtu', String(opts.mtu)] : [];
    if (topology === 'pair') {
      // Create both ends directly inside the namespaces: no name ever exists
      // in the root namespace, so parallel runs cannot collide on veth names.
      await ip(['link', 'add', IFACE, 'netns', hostNs[0]!, ...mtuArgs, 'type', 'veth', 'peer', 'name', IFACE, 'netns', hostNs[1]!, ...mtuArgs]);
    } else {
      await ip(['-n', switchNs!, 'link', 'add', 'br0', ...mtuArgs, 'type', 'bridge']);
      await ip(['-n', switchNs!, 'link', 'set', 'br0', 'up']);
      for (let i = 0; i < n; i++) {
        const port = `p${i + 1}`;
        await ip(['link', 'add', IFACE, 'netns', hostNs[i]!, ...mtuArgs, 'type', 'veth', 'peer', 'name', port, 'netns', switchNs!, ...mtuArgs]);
        await ip(['-n', switchNs!, 'link', 'set', port, 'master', 'br0']);
        await ip(['-n', switchNs!, 'link', 'set', port, 'up']);
      }
    }
    const hosts: TestHost[] = [];
    for (let i = 0; i < n; i++) {
      const ns = hostNs[i]!;
      const hostIp = `${net24}.${i + 1}`;
      await ip(['-n', ns, 'addr', 'add', `${hostIp}/24`, 'dev', IFACE]);
      await ip(['-n', ns, 'link', 'set', IFACE, 'up']);
      // Hosts route overlay traffic between their own devices.
      await run('ip', ['netns', 'exec', ns, 'sysctl', '-q', '-w', 'net.ipv4.ip_forward=1'], { check: true });
      hosts.push({
        ns,
        iface: IFACE,
        addr: `${hostIp}/24`,
        ip: hostIp,
        exec: (args, eopts = {}) => {
          if (destroyed) return Promise.reject(new Error(`host ${ns} already destroyed`));
          return run('ip', ['netns', 'exec', ns, ...args], { ...eopts, onSpawn: track });
        },
        spawn: (args, sopts = {}) => {
          if (destroyed) throw new Error(`host ${ns} already destroyed`);
          // `ip netns exec` execs the command in place, so the child's pid is
          // the command's own pid (useful for reading /proc/<pid>/stat).
          const c = spawnChild('ip', ['netns', 'exec', ns, ...args], sopts);
          track(c);
          return c;
        },
      });
    }
    return { hosts, switchNs, destroy };
  } catch (e) {
    destroySync();
    unregister();
    throw e;
  }
}
