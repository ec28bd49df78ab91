/** Command-line options of the bench. */
import { ALL_PATHS, type PathId } from './paths.js';

export interface BenchOptions {
  seconds: number;
  paths: PathId[];
  quick: boolean;
  pingCount: number;
  pingIntervalMs: number;
  outDir: string;
  help: boolean;
}

export const USAGE = `usage: npm run bench -- [--duration S] [--only veth,vxlan,ftvxlan,vxlan6,ftvxlan6,udp,flannel-udp,ftwg,wggo] [--quick] [--out DIR]
  --duration S   seconds per iperf3 test (default 8; 2 with --quick)
  --only LIST    paths to measure, comma-separated (default: all)
  --quick        short smoke run
  --out DIR      results directory (default bench/results)`;

export function parseArgs(argv: string[], defaultOutDir: string): BenchOptions {
  // flannel's own udp joins the default run when FLANNELD_REF names its flanneld.
  const o: BenchOptions = { seconds: 8, paths: ALL_PATHS.filter((p) => p !== 'flannel-udp' || !!process.env.FLANNELD_REF), quick: false, pingCount: 100, pingIntervalMs: 50, outDir: defaultOutDir, help: false };
  let duration: number | null = null;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const [flag, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined];
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case '--duration': {
        const v = Number(value());
        if (!Number.isInteger(v) || v < 1 || v > 600) throw new Error('--duration must be a whole number of seconds, 1..600');
        duration = v;
        break;
      }
      case '--only': {
        const list = value().split(',').map((s) => s.trim()).filter(Boolean);
        const bad = list.filter((p) => !(ALL_PATHS as string[]).includes(p));
        if (bad.length || list.length === 0) throw new Error(`--only: unknown path(s) ${bad.join(',') || '(none)'}; choose from ${ALL_PATHS.join(',')}`);
        // Keep the canonical order so references are measured first.
        o.paths = ALL_PATHS.filter((p) => list.includes(p));
        break;
      }
      case '--quick':
        o.quick = true;
        break;
      case '--out':
        o.outDir = value();
        break;
      case '--help':
      case '-h':
        o.help = true;
        break;
      default:
        throw new Error(`unknown option ${a}`);
    }
  }
  o.seconds = duration ?? (o.quick ? 2 : 8);
  if (o.quick) o.pingCount = 10;
  return o;
}
