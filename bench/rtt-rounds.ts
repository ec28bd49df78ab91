/**
 * Round trips only, in paired rounds (node dist/bench/rtt-rounds.js
 * [--rounds N] [--paths udp,flannel-udp,ftwg,wggo] [--env NAME=VALUE]):
 * each round sets up every path one after the other (order rotating), warms
 * it with 2 s of one TCP stream, waits 1 s, then sends 100 pings 50 ms
 * apart, as `npm run bench` probes. A single bench run swings by 0.3 ms
 * between runs on this VM; paired rounds show which of two settings is
 * ahead. `--env NAME=VALUE` measures our paths (udp, ftwg) twice per round,
 * as they are and with that variable in the daemons' environment (e.g.
 * FLANNEL_UDP_WORKERS=1). bench/PROFILE.md has what it measured.
 */
import { runIperfClient, startIperfServer } from './iperf.js';
import { measureLatency } from './latency.js';
import { setupFlannel, setupFlannelRef, setupWireguardGo, type PathSetup } from './paths.js';
import { percentile } from './stats.js';

const arg = (name: string): string | undefined => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const rounds = Number(arg('--rounds') ?? 3);
const variantEnv = arg('--env');
const [envName, envValue] = variantEnv ? [variantEnv.slice(0, variantEnv.indexOf('=')), variantEnv.slice(variantEnv.indexOf('=') + 1)] : ['', ''];
if (variantEnv && !/^[A-Z0-9_]+$/.test(envName)) throw new Error(`--env wants NAME=VALUE, got ${variantEnv}`);
const paths = (arg('--paths') ?? 'udp,flannel-udp').split(',');
const quiet = () => {};

interface Variant {
  name: string;
  setup: () => Promise<PathSetup>;
}
const variants: Variant[] = [];
for (const p of paths) {
  const ours = p === 'udp' || p === 'ftwg';
  const backend = p === 'ftwg' ? 'wireguard' : 'udp';
  if (ours) {
    variants.push({ name: p, setup: () => setupFlannel(quiet, { backend }) });
    if (variantEnv) variants.push({ name: `${p} (${variantEnv})`, setup: () => setupFlannel(quiet, { backend, env: { [envName]: envValue } }) });
  } else if (p === 'flannel-udp') variants.push({ name: p, setup: () => setupFlannelRef(quiet) });
  else if (p === 'wggo') variants.push({ name: p, setup: () => setupWireguardGo(quiet) });
  else throw new Error(`unknown path ${p}`);
}

const p50s = new Map<string, number[]>(variants.map((v) => [v.name, []]));
for (let r = 0; r < rounds; r++) {
  const order = variants.map((_, i) => variants[(i + r) % variants.length]!);
  for (const v of order) {
    let s: PathSetup;
    try {
      s = await v.setup();
    } catch (e) {
      process.stderr.write(`round ${r + 1} ${v.name}: unavailable: ${(e as Error).message.slice(0, 200)}\n`);
      continue;
    }
    try {
      const srv = await startIperfServer(s.server);
      try {
        await runIperfClient(s.client, s.targetIp, { seconds: 2 });
      } finally {
        srv.kill();
      }
      await new Promise((res) => setTimeout(res, 1000));
      const l = await measureLatency(s.client, s.server, s.targetIp, 100, 50);
      p50s.get(v.name)!.push(l.p50Ms);
      process.stderr.write(`round ${r + 1} ${v.name}: RTT p50 ${l.p50Ms.toFixed(3)} ms, min ${l.minMs.toFixed(3)}\n`);
    } finally {
      await s.teardown();
    }
  }
}
for (const [name, xs] of p50s) {
  const sorted = [...xs].sort((a, b) => a - b);
  const mean = xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  process.stdout.write(`${name.padEnd(36)} p50 per round ${xs.map((x) => x.toFixed(3)).join(' ')}  mean ${mean.toFixed(3)}  median ${xs.length ? percentile(sorted, 50).toFixed(3) : '-'}\n`);
}
