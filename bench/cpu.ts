/**
 * CPU time of processes from /proc/<pid>/stat (utime + stime, all threads),
 * so the daemon's worker threads and any helper children are counted.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

let clkTck: number | null = null;

/** Clock ticks per second used by /proc/<pid>/stat. */
export function ticksPerSecond(): number {
  if (clkTck == null) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;
    } catch {
      clkTck = 100; // The value on every mainstream Linux build.
    }
  }
  return clkTck;
}

export interface ProcStat {
  ppid: number;
  utime: number;
  stime: number;
  /** CPU of the children it waited for (e.g. the `ip` processes a daemon ran). */
  cutime: number;
  cstime: number;
}

/** Parses one /proc/<pid>/stat line. The command name may contain spaces and ')'. */
export function parseProcStat(line: string): ProcStat {
  const close = line.lastIndexOf(')');
  if (close < 0) throw new Error('malformed /proc stat line');
  // Fields after the name start at field 3 (state); utime is field 14, stime 15, cutime 16, cstime 17.
  const rest = line.slice(close + 2).split(' ');
  return { ppid: Number(rest[1]), utime: Number(rest[11]), stime: Number(rest[12]), cutime: Number(rest[13]), cstime: Number(rest[14]) };
}

function readStat(pid: number): ProcStat | null {
  try {
    return parseProcStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return null;
  }
}

/** The pids plus all their descendants alive now. */
export function processTree(roots: number[]): number[] {
  const children = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const st = readStat(Number(name));
    if (!st) continue;
    const list = children.get(st.ppid) ?? [];
    list.push(Number(name));
    children.set(st.ppid, list);
  }
  const seen = new Set<number>();
  const stack = [...roots];
  while (stack.length) {
    const p = stack.pop()!;
    if (seen.has(p)) continue;
    seen.add(p);
    stack.push(...(children.get(p) ?? []));
  }
  return [...seen];
}

/** Total CPU seconds (user + system) consumed so far by the process trees. */
export function cpuSeconds(roots: number[]): number {
  let ticks = 0;
  for (const pid of processTree(roots)) {
    const st = readStat(pid);
    if (st) ticks += st.utime + st.stime;
  }
  return ticks / ticksPerSecond();
}

/** CPU seconds per gigabyte (1e9 bytes) moved, or null without traffic. */
export function cpuPerGB(cpuSec: number, bytes: number): number | null {
  return bytes > 0 ? cpuSec / (bytes / 1e9) : null;
}
