/**
 * `npm run bench`: throughput, loss, latency and daemon CPU of three data
 * paths between two network namespaces, all measured in one run so the
 * ratios compare like with like on this machine:
 *   veth   - the bare link (upper bound)
 *   vxlan  - kernel VXLAN over that link (what an in-kernel overlay costs)
 *   ftvxlan - flannel-ts flanneld with the vxlan backend (the same kernel dataplane, programmed by us)
 *   udp    - flannel-ts flanneld with the udp backend (userspace overlay)
 *   ftwg   - flannel-ts flanneld with the wireguard backend on its userspace path
 *   wggo   - Debian's wireguard-go configured by wg (the userspace WireGuard to beat)
 * Progress goes to stderr; the table to stdout; JSON and SVG to bench/results/.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import os from 'node:os';
import { createLogger } from '../src/log.js';
import { parseArgs, USAGE, type BenchOptions } from './args.js';
import { haveBinary } from './latency.js';
import { runSuite } from './measure.js';
import { PATH_LABELS, Unavailable, repoRoot, setupFlannel, setupFlannelRef, setupVeth, setupVxlan, setupVxlan6, setupWireguardGo, type PathId, type PathSetup, type Progress } from './paths.js';
import { computeRatios, metricTable, ratioColumns, renderTable, type PathResult } from './report.js';
import { renderSvg } from './svg.js';

const log = createLogger('bench');
const progress: Progress = (msg) => log.info(msg);

function preflight(): string | null {
  if (process.platform !== 'linux') return 'the bench needs Linux network namespaces';
  if (process.getuid?.() !== 0) return 'the bench must run as root (it creates network namespaces)';
  for (const bin of ['ip', 'iperf3']) if (!haveBinary(bin)) return `${bin} is not installed`;
  return null;
}

async function setup(path: PathId): Promise<PathSetup> {
  switch (path) {
    case 'veth':
      return setupVeth();
    case 'vxlan':
      return setupVxlan();
    case 'ftvxlan':
      return setupFlannel(progress, { backend: 'vxlan' });
    case 'vxlan6':
      return setupVxlan6();
    case 'ftvxlan6':
      return setupFlannel(progress, { backend: 'vxlan', ipv6: true });
    case 'udp':
      return setupFlannel(progress);
    case 'flannel-udp':
      return setupFlannelRef(progress);
    case 'ftwg':
      return setupFlannel(progress, { backend: 'wireguard' });
    case 'wggo':
      return setupWireguardGo(progress);
  }
}

async function measurePath(path: PathId, o: BenchOptions): Promise<PathResult> {
  const label = PATH_LABELS[path];
  progress(`${path}: setting up ${label}`);
  let p: PathSetup;
  try {
    p = await setup(path);
  } catch (e) {
    const status = e instanceof Unavailable ? 'unavailable' : 'failed';
    progress(`${path}: ${status}: ${(e as Error).message}`);
    return { path, label, status, reason: (e as Error).message };
  }
  try {
    const suite = await runSuite(path, p, { seconds: o.seconds, pingCount: o.pingCount, pingIntervalMs: o.pingIntervalMs }, progress);
    return { path, label, status: 'ok', targetIp: p.targetIp, notes: p.notes, suite };
  } catch (e) {
    progress(`${path}: failed: ${(e as Error).message}`);
    return { path, label, status: 'failed', reason: (e as Error).message, targetIp: p.targetIp, notes: p.notes };
  } finally {
    progress(`${path}: tearing down`);
    await p.teardown();
  }
}

function machineInfo() {
  let iperf3 = 'unknown';
  try {
    iperf3 = execFileSync('iperf3', ['--version'], { encoding: 'utf8' }).split('\n')[0]!.trim();
  } catch {
    // Only informational.
  }
  return { kernel: os.release(), cpu: os.cpus()[0]?.model ?? 'unknown', cpus: os.cpus().length, node: process.version, iperf3 };
}

async function main(): Promise<number> {
  let o: BenchOptions;
  try {
    o = parseArgs(process.argv.slice(2), join(repoRoot(), 'bench', 'results'));
  } catch (e) {
    process.stderr.write(`${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (o.help) {
    process.stdout.write(USAGE + '\n');
    return 0;
  }
  const problem = preflight();
  if (problem) {
    process.stderr.write(`bench: ${problem}\n`);
    return 1;
  }

  const started = new Date();
  progress(`paths ${o.paths.join(',')}, ${o.seconds}s per iperf3 test${o.quick ? ' (quick)' : ''}`);
  const results: PathResult[] = [];
  for (const path of o.paths) results.push(await measurePath(path, o));

  const table = metricTable(results);
  const cols = ratioColumns(results.filter((r) => r.suite).map((r) => r.path));
  const doc = {
    startedAt: started.toISOString(),
    finishedAt: new Date().toISOString(),
    options: { seconds: o.seconds, paths: o.paths, quick: o.quick, pingCount: o.pingCount, pingIntervalMs: o.pingIntervalMs },
    machine: machineInfo(),
    results,
    metrics: table,
    ratios: computeRatios(table, cols),
  };

  process.stdout.write('\n' + renderTable(results) + '\n');

  mkdirSync(o.outDir, { recursive: true });
  const stamp = started.toISOString().replace(/[:.]/g, '-');
  const json = JSON.stringify(doc, null, 2) + '\n';
  writeFileSync(join(o.outDir, `${stamp}.json`), json);
  writeFileSync(join(o.outDir, 'latest.json'), json);
  const svg = renderSvg(results, {
    title: `flannel-ts bench ${started.toISOString().slice(0, 19)}Z`,
    subtitle: `${doc.machine.cpus}x ${doc.machine.cpu}, kernel ${doc.machine.kernel}, ${o.seconds}s per test`,
  });
  writeFileSync(join(o.outDir, 'latest.svg'), svg);
  progress(`wrote ${join(o.outDir, `${stamp}.json`)}, latest.json, latest.svg`);
  // An unavailable path (e.g. no daemon in this checkout) is reported, not an error.
  return results.some((r) => r.status === 'failed') ? 1 : 0;
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (e: unknown) => {
    process.stderr.write(`bench: ${(e as Error).stack ?? String(e)}\n`);
    process.exitCode = 1;
  },
);
