/**
 * strongSwan's charon as flanneld's child process, as flannel runs it, but
 * so that several daemons can share one machine (hosts simulated in network
 * namespaces): charon's pid file (/var/run/charon.pid) is compiled in, so
 * each charon runs in a mount namespace of its own whose /run is this
 * daemon's run directory (`unshare --mount` + a bind mount). Its config
 * (STRONGSWAN_CONF), pid file and VICI socket all live there; from outside
 * the socket is `<runDir>/charon.vici`.
 *
 * `setpriv --pdeathsig TERM` makes charon die with flanneld even when
 * flanneld is killed with SIGKILL (flannel sets Pdeathsig the same way); a
 * charon that survived anyway (its pid file names a live charon) is stopped
 * before a new one starts. charon's log lines reach our log with the
 * component "charon". If charon exits while we run it is started again with
 * backoff and `onStarted` runs again, so the caller reloads its keys and
 * connections.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { access, mkdir, readFile, realpath, rm, writeFile, constants } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { delimiter, join } from 'node:path';
import type { Logger } from '../../log.js';
import type { HealthReporter } from '../../metrics/health.js';
import { ViciClient } from '../../vici/client.js';
import { BackendUnavailableError } from '../errors.js';
import type { EspMode } from './options.js';
import { CharonLog } from './charon-log.js';
import { holdPath, type Hold } from '../../native/exclusive-lock.js';

/** flannel's search list: PATH, then where distributions put charon. */
export const CHARON_PATHS = ['charon', '/usr/lib/strongswan/charon', '/usr/lib/ipsec/charon', '/usr/libexec/strongswan/charon', '/usr/libexec/ipsec/charon'];

async function executable(path: string): Promise<boolean> {
  return access(path, constants.X_OK).then(
    () => true,
    () => false,
  );
}

/** The charon to run: `explicit` if given (must exist), else the first of flannel's paths that exists. */
export async function findCharon(explicit: string | null, envPath = process.env.PATH ?? '', candidates = CHARON_PATHS): Promise<string> {
  if (explicit) {
    if (await executable(explicit)) return explicit;
    throw new BackendUnavailableError(`ipsec backend: charon not found at ${explicit} (FLANNEL_IPSEC_CHARON); install strongswan-charon`);
  }
  for (const p of candidates) {
    const paths = p.includes('/') ? [p] : envPath.split(delimiter).filter(Boolean).map((d) => join(d, p));
    for (const c of paths) if (await executable(c)) return c;
  }
  throw new BackendUnavailableError(`ipsec backend: charon (strongSwan's IKE daemon) not found at ${CHARON_PATHS.join(', ')}: install strongswan-charon and strongswan-swanctl (Debian), or set FLANNEL_IPSEC_CHARON`);
}

/**
 * Plugins charon loads: crypto for flannel's IKE proposal and the default
 * ESP proposal (aes, sha2, hmac, gmp for modp4096, openssl for ecp256 and
 * gcm), the kernel interface, sockets and VICI. Only these: Debian's own
 * config would load every installed plugin, kernel-libipsec included.
 */
const BASE_PLUGINS = ['random', 'nonce', 'aes', 'sha1', 'sha2', 'md5', 'hmac', 'gmp', 'openssl', 'gcm', 'pem', 'pkcs1', 'x509', 'pubkey', 'kdf'];

/** strongswan.conf for our charon; `runInside` is its /run (where the pid file and socket go). */
export function strongswanConf(esp: EspMode, runInside: string): string {
  const kernel = esp === 'userspace' ? ['kernel-libipsec', 'kernel-netlink'] : ['kernel-netlink'];
  return [
    '# Written by flanneld (ipsec backend) at every start; edits are lost.',
    'charon {',
    `  load = ${[...BASE_PLUGINS, ...kernel, 'socket-default', 'vici'].join(' ')}`,
    // No routes of charon's: with kernel ESP flannel's policies steer; with libipsec flanneld routes the
    // peers' subnets into ipsec0 itself (charon's own routes need a local address inside our subnet,
    // which does not exist before the first pod, and their failure fails the CHILD_SA).
    '  install_routes = no',
    '  plugins {',
    `    vici { socket = unix://${runInside}/charon.vici }`,
    '  }',
    '  filelog {',
    '    stderr {',
    '      default = 1',
    '      net = 0',
    '      enc = 0',
    '      ike_name = yes',
    '    }',
    '  }',
    '}',
    '',
  ].join('\n');
}

export interface CharonEvents {
  /** charon answers on its VICI socket (after the first start and after each restart). */
  onStarted(): Promise<void>;
  /** charon negotiated a CHILD_SA but could not install it; `reason` is the kernel's word when charon logged it. */
  onSaInstallFailed(connection: string | null, reason: string | null): void;
}

export interface CharonDaemonOptions {
  executable: string;
  runDir: string;
  esp: EspMode;
  log: Logger;
  health: HealthReporter;
  events: CharonEvents;
  /** How long charon may take to open its VICI socket. */
  startTimeoutMs?: number;
  /** Restart backoff after charon dies: first delay, doubling up to the cap. */
  restartDelayMs?: number;
  maxRestartDelayMs?: number;
}

export class CharonDaemon {
  private child: ChildProcess | null = null;
  private stopping = false;
  private restartTimer: NodeJS.Timeout | null = null;
  private delay: number;
  private startedAt = 0;
  private readonly charonLog: CharonLog;
  restarts = 0;

  constructor(private readonly opts: CharonDaemonOptions) {
    this.delay = opts.restartDelayMs ?? 1000;
    this.charonLog = new CharonLog(opts.log.child('charon'), (conn, reason) => opts.events.onSaInstallFailed(conn, reason));
  }

  get socketPath(): string {
    return join(this.opts.runDir, 'charon.vici');
  }

  get running(): boolean {
    return this.child !== null;
  }

  /** Start charon and wait until its VICI socket answers; rejects (charon stopped) when it does not come up. */
  async start(): Promise<void> {
    this.stopping = false;
    await this.launch();
  }

  private async launch(): Promise<void> {
    this.startedAt = 0;
    await mkdir(this.opts.runDir, { recursive: true, mode: 0o700 });
    // Held for the daemon's lifetime: a second flanneld given this run dir stops here, before it
    // looks at the pid file (whose charon is the first daemon's, alive) or writes anything.
    this.runDirHold ??= holdPath(this.opts.runDir, 'the ipsec run directory', 'FLANNEL_IPSEC_RUN_DIR', join(this.opts.runDir, 'flanneld.lock'));
    await this.stopStale();
    const runInside = await realpath('/var/run').catch(() => '/run');
    await writeFile(join(this.opts.runDir, 'strongswan.conf'), strongswanConf(this.opts.esp, runInside), { mode: 0o600 });
    await rm(this.socketPath, { force: true });
    const exited = this.spawnCharon(runInside);
    try {
      await Promise.race([this.waitForSocket(), exited.then((why) => Promise.reject(new BackendUnavailableError(`ipsec backend: charon exited while starting (${why})`)))]);
    } catch (err) {
      const child = this.child;
      this.child = null;
      if (child) await terminate(child);
      throw err;
    }
    this.startedAt = Date.now();
    this.opts.health.report('charon', null);
    this.opts.log.info('charon started', { pid: this.child?.pid, socket: this.socketPath, esp: this.opts.esp });
  }

  /** A VICI connection to charon (the caller closes it). */
  client(timeoutMs = 10_000): Promise<ViciClient> {
    return ViciClient.connect(this.socketPath, timeoutMs);
  }

  /** SIGTERM, then SIGKILL after 5 s; no restart afterwards. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.restartTimer) clearTimeout(this.restartTimer);
    this.restartTimer = null;
    const child = this.child;
    if (child) await terminate(child);
    this.child = null;
    await this.runDirHold?.release();
    this.runDirHold = null;
  }

  private spawnCharon(runInside: string): Promise<string> {
    // unshare execs sh, sh execs setpriv, setpriv execs charon: one process, whose parent is flanneld.
    const script = 'mount --bind "$0" "$1" && exec setpriv --pdeathsig TERM "$2"';
    const child = spawn('unshare', ['--mount', '--propagation', 'private', '--', 'sh', '-c', script, this.opts.runDir, runInside, this.opts.executable], {
      env: { ...process.env, STRONGSWAN_CONF: `${runInside}/strongswan.conf` },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child = child;
    for (const stream of [child.stdout!, child.stderr!]) createInterface({ input: stream }).on('line', (l) => this.charonLog.line(l));
    return new Promise((resolve) => {
      child.on('error', (err) => {
        this.opts.log.error('cannot start charon', { error: err.message });
        resolve(err.message);
      });
      child.on('exit', (code, signal) => {
        const why = signal ? `signal ${signal}` : `exit code ${code}`;
        const wasRunning = this.child === child && this.startedAt > 0;
        if (this.child === child) this.child = null;
        resolve(why);
        if (wasRunning && !this.stopping) this.died(why, Date.now() - this.startedAt);
      });
    });
  }

  private died(why: string, ranMs: number): void {
    // A charon that ran for a minute earns a fresh backoff.
    if (ranMs > 60_000) this.delay = this.opts.restartDelayMs ?? 1000;
    this.opts.health.report('charon', `charon exited (${why}); restarting`);
    this.opts.log.error('charon exited, restarting it', { why, inMs: this.delay });
    this.restartTimer = setTimeout(() => void this.restart(), this.delay);
    this.delay = Math.min(this.delay * 2, this.opts.maxRestartDelayMs ?? 30_000);
  }

  private async restart(): Promise<void> {
    this.restartTimer = null;
    if (this.stopping) return;
    try {
      await this.launch();
    } catch (err) {
      if (!this.stopping) this.died((err as Error).message, 0);
      return;
    }
    this.restarts++;
    // A failed reload is the caller's to report and retry; charon itself is fine.
    await this.opts.events.onStarted().catch((err: Error) => this.opts.log.error('reloading charon after its restart failed', { error: err.message }));
  }

  private async waitForSocket(): Promise<void> {
    const deadline = Date.now() + (this.opts.startTimeoutMs ?? 10_000);
    for (;;) {
      try {
        const c = await ViciClient.connect(this.socketPath, 2000);
        await c.request('version', {});
        c.close();
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new BackendUnavailableError(`ipsec backend: charon did not open its VICI socket ${this.socketPath} in time: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    }
  }

  private runDirHold: Hold | null = null;

  /** A charon left by an earlier flanneld of this run directory, now dead (we hold the run dir): its pid file names a live charon. */
  private async stopStale(): Promise<void> {
    const pid = Number((await readFile(join(this.opts.runDir, 'charon.pid'), 'utf8').catch(() => '')).trim());
    if (!Number.isInteger(pid) || pid <= 1) return;
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (!cmdline.split('\0')[0]?.endsWith('charon')) return;
    this.opts.log.warn('stopping a charon left by an earlier flanneld', { pid });
    await terminatePid(pid);
  }
}

function terminate(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const kill = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.once('exit', () => {
      clearTimeout(kill);
      resolve();
    });
    child.kill('SIGTERM');
  });
}

async function terminatePid(pid: number): Promise<void> {
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  for (let i = 0; i < 50 && alive(); i++) await new Promise((r) => setTimeout(r, 100));
  if (alive()) process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 20 && alive(); i++) await new Promise((r) => setTimeout(r, 100));
}
