/**
 * Runs bin/flanneld as a child process for e2e tests and collects its log
 * lines, so tests can wait for events ("lease added ...") and exit codes.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
export const FLANNELD = join(REPO_ROOT, 'bin', 'flanneld');
export const FLANNELCTL = join(REPO_ROOT, 'bin', 'flannelctl');

export class DaemonProcess {
  readonly lines: string[] = [];
  readonly exited: Promise<number | null>;
  private waiters: { re: RegExp; resolve: (l: string) => void }[] = [];

  constructor(
    readonly child: ChildProcess,
    readonly name: string,
  ) {
    const onData = (buf: Buffer) => {
      for (const line of buf.toString().split('\n')) {
        if (!line) continue;
        this.lines.push(line);
        if (process.env.FTS_TEST_VERBOSE) process.stderr.write(`[${name}] ${line}\n`);
        this.waiters = this.waiters.filter((w) => (w.re.test(line) ? (w.resolve(line), false) : true));
      }
    };
    child.stdout?.on('data', onData);
    child.stderr?.on('data', onData);
    this.exited = new Promise((resolve) => child.once('exit', (code, sig) => resolve(code ?? (sig ? -1 : null))));
  }

  /** Resolves with the first log line matching re (already seen or future). */
  waitForLine(re: RegExp, timeoutMs = 15_000): Promise<string> {
    const seen = this.lines.find((l) => re.test(l));
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`${this.name}: no log line matching ${re} within ${timeoutMs} ms; log:\n${this.lines.slice(-30).join('\n')}`)), timeoutMs);
      this.waiters.push({ re, resolve: (l) => (clearTimeout(t), resolve(l)) });
      void this.exited.then((code) => {
        clearTimeout(t);
        reject(new Error(`${this.name} exited (${code}) before logging ${re}; log:\n${this.lines.slice(-30).join('\n')}`));
      });
    });
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.alive) this.child.kill(signal);
    return this.exited;
  }
}

/**
 * Start flanneld; `prefix` is e.g. ['ip','netns','exec',NS] to run inside a
 * namespace; `program` replaces ours (e.g. flannel's own flanneld binary).
 */
export function startDaemon(args: string[], opts: { name?: string; env?: NodeJS.ProcessEnv; prefix?: string[]; program?: string[] } = {}): DaemonProcess {
  const argv = [...(opts.prefix ?? []), ...(opts.program ?? [process.execPath, FLANNELD]), ...args];
  const child = spawn(argv[0]!, argv.slice(1), { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'pipe', 'pipe'] });
  const d = new DaemonProcess(child, opts.name ?? 'flanneld');
  running.add(d);
  void d.exited.then(() => running.delete(d));
  return d;
}

const running = new Set<DaemonProcess>();
process.on('exit', () => {
  for (const d of running) d.child.kill('SIGKILL');
});
