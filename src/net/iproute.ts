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

/** Runs many commands of one program in one process (see IpRoute.batch). */
export interface BatchRunner {
  batch(lines: readonly string[]): Promise<{ line: string; message: string }[]>;
}

export interface IpRunnerOptions {
  /** "plan" records commands instead of running them. */
  mode?: 'run' | 'plan';
  /** Path of the ip binary. */
  binary?: string;
  /** Canned stdout for plan mode, by joined args (e.g. for "-4 -o addr show dev flannel0"). */
  planOutputs?: Record<string, string>;
  timeoutMs?: number;
  /** Every command also goes here as one line ("ip ...", "bridge ..."); several runners may share one. */
  transcript?: string[];
}

/** The Debian package of each program a runner may be pointed at, for "not found" errors. */
const PACKAGES: Record<string, string> = { ip: 'iproute2', bridge: 'iproute2', nft: 'nftables' };

export class IpRoute implements IpRunner, BatchRunner {
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
    this.opts.transcript?.push(`${this.program} ${args.join(' ')}`);
    if (this.mode === 'plan') return Promise.resolve(this.opts.planOutputs?.[args.join(' ')] ?? '');
    return this.exec(args).then(({ stdout, error }) => (error ? Promise.reject(error) : stdout));
  }

  /**
   * Run the program for real, with `input` on stdin. Resolves with its output
   * and, when it failed, the IpCommandError to report (a missing program
   * names the package to install); `missingProgram` tells that case apart.
   */
  private exec(args: readonly string[], input?: string, timeoutMs = this.opts.timeoutMs ?? 10_000): Promise<{ stdout: string; stderr: string; error: IpCommandError | null; missingProgram: boolean }> {
    return new Promise((resolve) => {
      const child = execFile(this.binary, [...args], { timeout: timeoutMs, encoding: 'utf8' }, (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr, error: null, missingProgram: false });
        const e = err as NodeJS.ErrnoException & { code?: number | string };
        if (e.code === 'ENOENT') {
          const pkg = PACKAGES[this.program] ?? `the package providing ${this.program}`;
          return resolve({ stdout, stderr, error: new IpCommandError(args, `"${this.binary}" not found: install ${pkg}`, null, this.program), missingProgram: true });
        }
        resolve({ stdout, stderr, error: new IpCommandError(args, stderr || e.message, typeof e.code === 'number' ? e.code : null, this.program), missingProgram: false });
      });
      // A program that exits before reading all of its input (ip on a line it cannot parse) closes
      // the pipe under us: EPIPE here is not ours to throw, its exit status reports the failure.
      child.stdin?.on('error', () => {});
      if (input !== undefined) child.stdin?.end(input);
    });
  }

  /**
   * Run `lines` (ip commands without the leading "ip") in one process:
   * `ip -force -batch -`, which carries on after a failing line. Returns the
   * lines that failed with iproute2's message for each; never rejects for a
   * failing line, only when the program cannot run at all. Plan mode records
   * the lines and reports no failure.
   *
   * iproute2 exits outright on an argument it cannot parse, -force or not,
   * leaving the lines after it unapplied without saying which line it was.
   * Then the batch is run again in halves until that line stands alone:
   * every other line is still applied (a few more processes, only when a
   * line is that broken), and the line is reported with the message.
   */
  async batch(lines: readonly string[]): Promise<{ line: string; message: string }[]> {
    if (lines.length === 0) return [];
    for (const l of lines) {
      this.commands.push(l.split(' '));
      this.opts.transcript?.push(`${this.program} ${l}`);
    }
    if (this.mode === 'plan') return [];
    return this.runBatch(lines);
  }

  private async runBatch(lines: readonly string[]): Promise<{ line: string; message: string }[]> {
    const { stderr, error, missingProgram } = await this.exec(['-force', '-batch', '-'], lines.join('\n') + '\n', this.opts.timeoutMs ?? 30_000);
    if (missingProgram) throw error;
    // Each failing line prints its messages, then "Command failed -:N".
    const failures: { line: string; message: string }[] = [];
    let pending: string[] = [];
    for (const l of stderr.split('\n')) {
      const m = /^Command failed -:(\d+)$/.exec(l.trim());
      if (m) {
        failures.push({ line: lines[Number(m[1]) - 1] ?? `(line ${m[1]})`, message: pending.join('; ') || 'failed' });
        pending = [];
      } else if (l.trim()) pending.push(l.trim());
    }
    // Messages after the last "Command failed": the program stopped on a line without naming it.
    if (!error || pending.length === 0) {
      if (error && failures.length === 0) throw error;
      return failures;
    }
    if (lines.length === 1) return [{ line: lines[0]!, message: pending.join('; ') }];
    const half = Math.ceil(lines.length / 2);
    return [...(await this.runBatch(lines.slice(0, half))), ...(await this.runBatch(lines.slice(half)))];
  }

  /**
   * Run the program on a whole file given on stdin (`nft -f -`): one
   * transaction for nft. Rejects with IpCommandError when it fails.
   */
  batchFile(text: string): Promise<string> {
    this.opts.transcript?.push(`${this.program} -f - <<EOF\n${text}EOF`);
    this.commands.push(['-f', '-']);
    if (this.mode === 'plan') return Promise.resolve('');
    return this.exec(['-f', '-'], text).then(({ stdout, error }) => (error ? Promise.reject(error) : stdout));
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
    return this.commands.map((c) => `${this.program} ${c.join(' ')}`);
  }
}
