/**
 * The README's main job: three hosts as network namespaces on this machine,
 * joined by a bridge, each running flanneld with the udp backend and the
 * embedded store; a CNI-like bridge per host carries FLANNEL_SUBNET; then
 * every host pings every other host's pod address and iperf3 measures one
 * path. Everything it creates is removed at the end, or on Ctrl-C.
 *
 * Options: --hosts N (2..6, default 3), --backend udp|vxlan|host-gw|wireguard|ipsec|alloc, --seconds S (iperf3 time, default 3).
 * The hosts share this machine's /run, so wireguard and ipsec get per-host
 * paths (WIREGUARD_KEY_FILE, FLANNEL_WIREGUARD_SOCKET_DIR, FLANNEL_IPSEC_RUN_DIR).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHosts, waitFor, type TestHost } from '../test/helpers/netns.js';
import { LocalStore } from '../src/subnet/local-store.js';
import { parseEnv } from '../src/subnet/subnet-env.js';
import { randomBytes } from 'node:crypto';
import { FLANNELD } from '../test/helpers/daemon.js';
import { attachPodBridge } from '../test/helpers/pod-bridge.js';

const args = process.argv.slice(2);
const opt = (name: string, def: string) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] ? args[i + 1]! : def;
};
const hostCount = Math.max(2, Math.min(6, Number(opt('hosts', '3'))));
const backend = opt('backend', 'udp');
const seconds = Number(opt('seconds', '3'));

const say = (msg: string) => process.stdout.write(`${msg}\n`);

async function main(): Promise<number> {
  if (process.getuid?.() !== 0) {
    say('demo: needs root (network namespaces, TUN devices); run it with sudo');
    return 1;
  }
  const storeDir = await mkdtemp(join(tmpdir(), 'flannel-ts-demo-'));
  say(`[1/6] creating ${hostCount} hosts as network namespaces joined by a bridge (192.0.2.0/24)`);
  const set = await createHosts(hostCount, { prefix: 'ftsdemo', topology: 'bridge' });
  const stopAll = async () => {
    await set.destroy();
    await rm(storeDir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => void stopAll().then(() => process.exit(130)));
  try {
    const network = '10.5.0.0/16';
    say(`[2/6] network config in the embedded store ${storeDir}: {"Network":"${network}","Backend":{"Type":"${backend}"}}`);
    const store = new LocalStore({ dir: storeDir });
    // ipsec needs a PSK of 96+ characters: a random one for this demo only.
    const extra = backend === 'ipsec' ? { PSK: randomBytes(72).toString('base64') } : {};
    await store.put('/coreos.com/network/config', JSON.stringify({ Network: network, Backend: { Type: backend, ...extra } }));
    await store.close();

    say(`[3/6] starting flanneld (${backend} backend) in every host`);
    const logs = new Map<TestHost, string[]>();
    for (const [i, h] of set.hosts.entries()) {
      const lines: string[] = [];
      logs.set(h, lines);
      const perHost = {
        WIREGUARD_KEY_FILE: join(storeDir, `host${i + 1}.wgkey`),
        FLANNEL_WIREGUARD_SOCKET_DIR: join(storeDir, `host${i + 1}-wg`),
        FLANNEL_IPSEC_RUN_DIR: join(storeDir, `host${i + 1}-ipsec`),
      };
      const child = h.spawn([process.execPath, FLANNELD, `--local-store=${storeDir}`, `--iface=${h.iface}`, `--subnet-file=${join(storeDir, `host${i + 1}.env`)}`, '--healthz-ip=127.0.0.1', '--healthz-port=8471'], {
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, ...perHost },
      });
      child.stderr?.on('data', (b: Buffer) => lines.push(...b.toString().split('\n').filter(Boolean)));
      child.once('exit', (code) => lines.push(`(flanneld exited with ${code})`));
    }
    const subnets: string[] = [];
    for (const [i, h] of set.hosts.entries()) {
      const envFile = join(storeDir, `host${i + 1}.env`);
      const readEnv = async (): Promise<Record<string, string> | null> => {
        const vars = parseEnv(await readFile(envFile, 'utf8'));
        return vars.FLANNEL_SUBNET ? vars : null;
      };
      const env = await waitFor(readEnv, 20_000, `subnet.env of ${h.ns}`).catch((err: Error) => {
        throw new Error(`${err.message}\nflanneld log:\n${logs.get(h)!.join('\n')}`);
      });
      subnets.push(env.FLANNEL_SUBNET!);
      say(`      host${i + 1} ${h.ip}: FLANNEL_SUBNET=${env.FLANNEL_SUBNET} FLANNEL_MTU=${env.FLANNEL_MTU}`);
      await attachPodBridge(h, env);
    }
    const podAddr = (i: number) => subnets[i]!.split('/')[0]!;

    if (backend === 'alloc') {
      say('[4/6] alloc backend: leases only, no dataplane; skipping traffic');
      return 0;
    }
    say('[4/6] every host pings every other host, pod address to pod address');
    let failures = 0;
    for (const [i, h] of set.hosts.entries()) {
      for (let j = 0; j < set.hosts.length; j++) {
        if (i === j) continue;
        const r = await waitFor(
          async () => {
            const p = await h.exec(['ping', '-c', '3', '-i', '0.2', '-W', '1', '-I', podAddr(i), podAddr(j)], { timeoutMs: 10_000 });
            return p.code === 0 ? p : null;
          },
          10_000,
          `ping ${podAddr(i)} -> ${podAddr(j)}`,
          200,
        ).catch(() => null);
        const rtt = r ? /= [\d.]+\/([\d.]+)\//.exec(r.stdout)?.[1] : undefined;
        say(`      host${i + 1} ${podAddr(i)} -> host${j + 1} ${podAddr(j)}: ${r ? `ok, avg rtt ${rtt} ms` : 'FAILED'}`);
        if (!r) failures++;
      }
    }

    const device = { udp: 'flannel0', vxlan: 'flannel.1', 'host-gw': 'eth0', wireguard: 'flannel-wg', ipsec: 'ESP' }[backend] ?? backend;
    say(`[5/6] iperf3, one TCP stream for ${seconds} s, host1 -> host2 through ${device}`);
    const [h1, h2] = [set.hosts[0]!, set.hosts[1]!];
    const server = h2.spawn(['iperf3', '-s', '-1', '-B', podAddr(1)], { stdio: 'ignore' });
    await new Promise((r) => setTimeout(r, 500));
    const ip3 = await h1.exec(['iperf3', '-c', podAddr(1), '-B', podAddr(0), '-t', String(seconds), '-J'], { timeoutMs: (seconds + 15) * 1000 });
    server.kill();
    try {
      const j = JSON.parse(ip3.stdout) as { end: { sum_received: { bits_per_second: number } } };
      say(`      ${(j.end.sum_received.bits_per_second / 1e9).toFixed(2)} Gbit/s received`);
    } catch {
      say(`      iperf3 failed: ${ip3.stderr.trim() || ip3.stdout.slice(0, 300)}`);
      failures++;
    }

    say(`[6/6] ${backend === 'udp' ? 'dataplane counters' : 'metrics'} of host1 (GET /metrics on its healthz port)`);
    const m = await h1.exec([process.execPath, '-e', "fetch('http://127.0.0.1:8471/metrics').then(r=>r.text()).then(t=>process.stdout.write(t))"], { timeoutMs: 5000 });
    for (const line of m.stdout.split('\n').filter((l) => l && !l.startsWith('#') && !/ 0$/.test(l))) say(`      ${line}`);
    say(failures === 0 ? 'demo: overlay works' : `demo: ${failures} check(s) failed`);
    return failures === 0 ? 0 : 1;
  } finally {
    say('cleaning up namespaces, daemons and the store');
    await stopAll();
  }
}

main().then(
  (code) => process.exit(code),
  (err: Error) => {
    process.stderr.write(`demo failed: ${err.message}\n`);
    process.exit(1);
  },
);
