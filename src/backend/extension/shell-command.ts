/**
 * One of the extension backend's commands, run as flannel runs it:
 * `sh -c COMMAND` with flannel's variables added to our environment and
 * `stdin` written to it. Output is kept bounded (a command printing without
 * end cannot fill our memory); a command still running after the timeout
 * is killed with its whole process group (what `sh -c` started too) and
 * reported as timed out.
 */
import { spawn } from 'node:child_process';

export interface ShellResult {
  /** Exit status; null when killed. */
  code: number | null;
  timedOut: boolean;
  /** Trimmed, at most STDOUT_LIMIT bytes (what PreStartupCommand publishes). */
  stdout: string;
  /** Trimmed, at most STDERR_LIMIT bytes (what a failure is reported with). */
  stderr: string;
  /** The command could not be started at all (no sh). */
  spawnError?: string;
}

export const STDOUT_LIMIT = 64 * 1024;
export const STDERR_LIMIT = 2048;

export function runShell(command: string, env: Record<string, string>, stdin: string, timeoutMs: number): Promise<ShellResult> {
  return new Promise((resolve) => {
    // detached: its own process group, so a timeout kills what the shell started as well.
    const child = spawn('sh', ['-c', command], { env: { ...process.env, ...env }, stdio: ['pipe', 'pipe', 'pipe'], detached: true });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let outBytes = 0;
    let errBytes = 0;
    child.stdout.on('data', (b: Buffer) => {
      if (outBytes < STDOUT_LIMIT) out.push(b.subarray(0, STDOUT_LIMIT - outBytes));
      outBytes += b.length;
    });
    child.stderr.on('data', (b: Buffer) => {
      if (errBytes < STDERR_LIMIT) err.push(b.subarray(0, STDERR_LIMIT - errBytes));
      errBytes += b.length;
    });
    child.stdin.on('error', () => {}); // the command need not read its input
    child.stdin.end(stdin);
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      try {
        process.kill(-child.pid!, 'SIGKILL');
      } catch {
        child.kill('SIGKILL');
      }
    }, timeoutMs);
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ code: null, timedOut: false, stdout: '', stderr: '', spawnError: e.message });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, timedOut, stdout: Buffer.concat(out).toString('utf8').trim(), stderr: Buffer.concat(err).toString('utf8').trim() });
    });
  });
}

/** "exit 3: not allowed yet", "timed out after 30 s", for a log line. */
export function describeFailure(r: ShellResult, timeoutMs: number): string {
  if (r.spawnError) return `cannot run sh: ${r.spawnError}`;
  if (r.timedOut) return `timed out after ${timeoutMs / 1000} s and was killed`;
  return `exit ${r.code}${r.stderr ? `: ${r.stderr}` : ''}`;
}
