/**
 * Runs `ip` (iproute2) commands for the backends, or records them instead.
 *
 * "run" mode executes `ip ARGS...` with execFile (no shell, so arguments
 * cannot be reinterpreted) and turns failures into IpCommandError carrying
 * the command line and ip's own message. "plan" mode only records the
 * commands: unit tests assert on them, and a dry run can print them.
 */
import { execFile } from 'node:child_process';
import { basename } from 'node:path';

export class IpCommandError extends Error {
  constructor(
    readonly args: readonly string[],
    readonly stderr: string,
    readonly exitCode: number | null,
    /** The program that failed: `ip`, or `iptables` for the same runner pointed at it. */
    readonly binary = 'ip',
  ) {
    super(`"${binary} ${args.join(' ')}" failed${exitCode === null ? '' : ` (exit ${exitCode})`}: ${stderr.trim() || 'no message'}`);
    this.name = 'IpCommandError';
  }

  /** iproute2's wording when the object to add already exists. */
  get exists(): boolean {
    return /File exists/i.test(this.stderr);
  }

  /** iproute2's wording when the object to delete or show does not exist. */
  get missing(): boolean {
    return /Cannot find device|No such process|No such device|Cannot assign requested address|does not exist/i.test(this.stderr);
  }
}

export interface IpRunner {
  /** Run `ip ...args`, resolving with its stdout. */
  run(args: readonly string[]): Promise<string>;
  /** Run, treating a "missing" failure (object already gone) as success. */
  runIgnoringMissing(args: readonly string[]): Promise<string>;
}

export interface IpRunnerOptions {
  /** "plan" records commands instead of running them. */
  mode?: 'run' | 'plan';
  /** Path of the ip binary. */
  binary?: string;
  /** Canned stdout for plan mode, by joined args (e.g. for "-4 -o addr show dev flannel0"). */
  planOutputs?: Record<string, string>;
  timeoutMs?: number;
}

export class IpRoute implements IpRunner {
  /** Every command run or planned, in order. */
  readonly commands: string[][] = [];
  private readonly mode: 'run' | 'plan';
  private readonly binary: string;

  constructor(private readonly opts: IpRunnerOptions = {}) {
    this.mode = opts.mode ?? 'run';
    this.binary = opts.binary ?? 'ip';
  }

  /** The program's name without its directory, as errors name it ("ip", "iptables"). */
  private get program(): string {
    return basename(this.binary);
  }

  get planning(): boolean {
    return this.mode === 'plan';
  }

  run(args: readonly string[]): Promise<string> {
    this.commands.push([...args]);
    if (this.mode === 'plan') return Promise.resolve(this.opts.planOutputs?.[args.join(' ')] ?? '');
    return new Promise((resolve, reject) => {
      execFile(this.binary, [...args], { timeout: this.opts.timeoutMs ?? 10_000, encoding: 'utf8' }, (err, stdout, stderr) => {
        if (!err) return resolve(stdout);
        const e = err as NodeJS.ErrnoException & { code?: number | string };
        if (e.code === 'ENOENT') {
          const pkg = this.program === 'ip' ? 'iproute2' : `the package providing ${this.program}`;
          reject(new IpCommandError(args, `"${this.binary}" not found: install ${pkg}`, null, this.program));
        } else {
          reject(new IpCommandError(args, stderr || e.message, typeof e.code === 'number' ? e.code : null, this.program));
        }
      });
    });
  }

  async runIgnoringMissing(args: readonly string[]): Promise<string> {
    try {
      return await this.run(args);
    } catch (err) {
      if (err instanceof IpCommandError && err.missing) return '';
      throw err;
    }
  }

  /** The commands as shell-like lines, for logs and test assertions. */
  lines(): string[] {
    return this.commands.map((c) => `ip ${c.join(' ')}`);
  }
}
