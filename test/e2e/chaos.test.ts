/**
 * Chaos, bounded: three udp daemons on the embedded store and two on etcd,
 * pinging each other pod to pod all along, while in random order daemons
 * are SIGKILLed and restarted, leases are deleted by hand, hostile leases
 * are written (covering the Network, of another length, outside it,
 * malformed, non-canonical keys, another key for a live host's subnet) and
 * etcd is stopped for 10 s. Afterwards: no two live hosts hold overlapping
 * subnets, every host reaches every other, and no daemon died that the test
 * did not kill.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHosts, run, waitFor, type HostSet, type TestHost } from '../helpers/netns.js';
import { startDaemon, FLANNELCTL, type DaemonProcess } from '../helpers/daemon.js';
import { startEtcd, type TestEtcd } from '../helpers/etcd.js';
import { attachPodBridge } from '../helpers/pod-bridge.js';
import { LocalStore } from '../../src/subnet/local-store.js';
import { parseEnv } from '../../src/subnet/subnet-env.js';
import { ip4NetOverlaps, parseIP4Net } from '../../src/net/ipaddr.js';

const P = '/coreos.com/network';
const CHAOS_MS = 40_000;

/** What the test does to a store, as an operator would from outside the daemons. */
interface OperatorStore {
  put(key: string, value: string): Promise<void>;
  delete(key: string): Promise<void>;
  list(prefix: string): Promise<{ entries: { key: string; value: string }[] }>;
  close(): Promise<void>;
}

interface Group {
  /** Which hosts of the set, the store args of their daemons, the second octet of their Network. */
  hosts: number[];
  storeArgs: string[];
  octet: number;
  /** Writes and lists as an operator would, from outside the daemons. */
  store: () => Promise<OperatorStore>;
}

describe('chaos: kills, hand-deleted and hostile leases, an etcd outage', { timeout: 150_000 }, () => {
  let set: HostSet;
  let dir: string;
  let etcd: TestEtcd;
  const daemons: (DaemonProcess | null)[] = [];
  const pods: string[] = [];
  const pingers: ReturnType<TestHost['spawn']>[] = [];
  /** Daemon processes the test killed on purpose; any other exit is a crash. */
  const killed = new Set<DaemonProcess>();
  let groups: Group[];
  let etcdDown = false;
  const actions: string[] = [];

  const start = (i: number, g: Group) => {
    const h = set.hosts[i]!;
    const d = startDaemon([...g.storeArgs, `--iface=${h.iface}`, `--subnet-file=${join(dir, `h${i}.env`)}`], { name: `h${i}`, prefix: ['ip', 'netns', 'exec', h.ns] });
    daemons[i] = d;
    return d;
  };
  const groupOf = (i: number) => groups.find((g) => g.hosts.includes(i))!;

  before(async () => {
    set = await createHosts(5, { prefix: 'ftsch', topology: 'bridge' });
    dir = await mkdtemp(join(tmpdir(), 'fts-chaos-'));
    await run('ip', ['-n', set.switchNs!, 'addr', 'add', '192.0.2.254/24', 'dev', 'br0'], { check: true });
    etcd = await startEtcd({ netns: set.switchNs!, host: '192.0.2.254' });
    const localDir = join(dir, 'store');
    const local = new LocalStore({ dir: localDir });
    // Daemons take subnets below .200; hostile leases use .200 and up, so a restart never finds its subnet taken by one.
    const config = (octet: number) => JSON.stringify({ Network: `10.${octet}.0.0/16`, SubnetMax: `10.${octet}.199.0`, Backend: { Type: 'udp' } });
    await local.put(`${P}/config`, config(5));
    await local.close();
    const put = await run('ip', ['netns', 'exec', set.switchNs!, process.execPath, FLANNELCTL, `--etcd-endpoints=${etcd.endpoint}`, 'put', `${P}/config`, config(6)]);
    assert.equal(put.code, 0, put.stderr);
    groups = [
      { hosts: [0, 1, 2], storeArgs: [`--local-store=${localDir}`], octet: 5, store: async () => new LocalStore({ dir: localDir }) },
      // etcd listens inside the switch namespace: the test reaches it through flannelctl run there.
      { hosts: [3, 4], storeArgs: [`--etcd-endpoints=${etcd.endpoint}`], octet: 6, store: async () => new EtcdViaCtl(set.switchNs!, etcd.endpoint) },
    ];
    for (const g of groups) for (const i of g.hosts) start(i, g);
    await Promise.all(daemons.map((d) => d!.waitForLine(/running/, 30_000)));
    for (const [i, h] of set.hosts.entries()) {
      const env = parseEnv(await readFile(join(dir, `h${i}.env`), 'utf8'));
      await attachPodBridge(h, env);
      pods[i] = env.FLANNEL_SUBNET!.split('/')[0]!;
    }
    // Continuous pings inside each group, for the whole run.
    for (const g of groups) for (const i of g.hosts) for (const j of g.hosts) if (i !== j) pingers.push(set.hosts[i]!.spawn(['ping', '-q', '-i', '0.5', '-W', '1', '-I', pods[i]!, pods[j]!], { stdio: 'ignore' }));
  });

  after(async () => {
    for (const p of pingers) p.kill();
    await Promise.all(daemons.map((d) => d?.stop('SIGKILL')));
    await etcd?.cleanup();
    await set?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  const rnd = (n: number) => Math.floor(Math.random() * n);

  async function act(): Promise<void> {
    const kind = rnd(9);
    if (kind < 3) {
      const i = rnd(set.hosts.length);
      const d = daemons[i]!;
      if (!d.alive) return;
      killed.add(d);
      await d.stop('SIGKILL');
      await new Promise((r) => setTimeout(r, 200 + rnd(800)));
      start(i, groupOf(i));
      actions.push(`kill+restart h${i}`);
    } else if (kind < 5) {
      const i = rnd(set.hosts.length);
      const g = groupOf(i);
      if (g.octet === 6 && etcdDown) return;
      const s = await g.store();
      await s.delete(`${P}/subnets/${pods[i]!.replace(/\.1$/, '.0')}-24`);
      await s.close();
      actions.push(`delete lease of h${i}`);
    } else {
      const g = groups[rnd(groups.length)]!;
      if (g.octet === 6 && etcdDown) return;
      const o = g.octet;
      const victim = g.hosts[rnd(g.hosts.length)]!;
      const v = (ip: string) => `{"PublicIP":"${ip}","PublicIPv6":null}`;
      const hostile: [string, string][] = [
        [`10.${o}.0.0-16`, v('198.18.9.1')],
        [`10.${o}.64.0-18`, v('198.18.9.2')],
        [`10.9.${rnd(250)}.0-24`, v('198.18.9.3')],
        [`10.${o}.${200 + rnd(50)}.0-24`, '{garbage'],
        [`x10.${o}.${200 + rnd(50)}.0-24`, v('198.18.9.4')],
        [`10.${o}.${200 + rnd(50)}.7-24`, v('198.18.9.5')],
        // Another key for a live host's subnet: the owner must not lose it, the others must not route it elsewhere.
        [`${pods[victim]!.replace(/\.1$/, '.0')}-24&fc00::-64`, v('198.18.9.6')],
      ];
      const [key, value] = hostile[rnd(hostile.length)]!;
      const s = await g.store();
      await s.put(`${P}/subnets/${key}`, value);
      await s.close();
      actions.push(`hostile ${key}`);
    }
  }

  test('after 40 s of chaos: distinct subnets, full reachability, no crash', async () => {
    const end = Date.now() + CHAOS_MS;
    let etcdStopped = false;
    while (Date.now() < end) {
      // The etcd outage happens once, at a random moment of the first half.
      if (!etcdStopped && Date.now() > end - CHAOS_MS / 2) {
        etcdStopped = true;
        if (!etcdDown) {
          etcdDown = true;
          actions.push('etcd stopped for 10 s');
          await etcd.stop();
          setTimeout(() => void etcd.start().then(() => ((etcdDown = false), actions.push('etcd back'))), 10_000);
        }
      }
      await act();
      await new Promise((r) => setTimeout(r, 500 + rnd(1000)));
    }
    await waitFor(() => !etcdDown, 20_000, 'etcd back up');
    const log = `actions: ${actions.join('; ')}`;

    // No crash: every daemon that exited was killed by the test, and the current ones run.
    for (const [i, d] of daemons.entries()) assert.ok(d!.alive, `h${i} is not running (${log})\n${d!.lines.slice(-20).join('\n')}`);
    for (const [i, d] of daemons.entries()) assert.ok(!d!.lines.some((l) => /lost our lease|FATAL|failed to start/.test(l)), `h${i}: ${d!.lines.filter((l) => /ERROR/.test(l)).join('\n')}`);

    // Same subnet as at the start (subnet.env), one lease per live host, no two overlapping.
    for (const g of groups) {
      const s = await g.store();
      const mine = await waitFor(async () => {
        const entries = (await s.list(`${P}/subnets/`)).entries;
        const byHost = g.hosts.map((i) => entries.filter((e) => e.value.includes(`"PublicIP":"${set.hosts[i]!.ip}"`)));
        return byHost.every((l) => l.length === 1) ? byHost.map((l) => l[0]!.key) : null;
      }, 15_000, `one lease per host of 10.${g.octet}.0.0/16`);
      await s.close();
      const nets = mine.map((k) => parseIP4Net(k.slice(k.lastIndexOf('/') + 1).split('&')[0]!.replace('-', '/')));
      for (let a = 0; a < nets.length; a++) for (let b = a + 1; b < nets.length; b++) assert.ok(!ip4NetOverlaps(nets[a]!, nets[b]!), `${mine[a]} overlaps ${mine[b]} (${log})`);
      for (const [k, i] of g.hosts.entries()) {
        const env = parseEnv(await readFile(join(dir, `h${i}.env`), 'utf8'));
        assert.equal(env.FLANNEL_SUBNET, `${pods[i]}/24`, `h${i} kept its subnet`);
        assert.equal(mine[k], `${P}/subnets/${pods[i]!.replace(/\.1$/, '.0')}-24`);
      }
    }

    // Everyone reaches everyone in its group.
    for (const g of groups) {
      for (const i of g.hosts) {
        for (const j of g.hosts) {
          if (i === j) continue;
          await waitFor(
            async () => (await set.hosts[i]!.exec(['ping', '-c', '1', '-W', '1', '-I', pods[i]!, pods[j]!], { timeoutMs: 5000 })).code === 0,
            20_000,
            `h${i} -> h${j} after chaos (${log})`,
            250,
          );
        }
      }
    }
  });
});

/**
 * The operator's view of the etcd store, from outside the namespaces: each
 * call runs flannelctl inside the switch namespace, where etcd listens.
 */
class EtcdViaCtl implements OperatorStore {
  constructor(
    private readonly ns: string,
    private readonly endpoint: string,
  ) {}
  private async ctl(args: string[]): Promise<string> {
    const r = await run('ip', ['netns', 'exec', this.ns, process.execPath, FLANNELCTL, `--etcd-endpoints=${this.endpoint}`, ...args], { timeoutMs: 20_000 });
    if (r.code !== 0) throw new Error(`flannelctl ${args.join(' ')}: ${r.stderr}`);
    return r.stdout;
  }
  async put(key: string, value: string): Promise<void> {
    await this.ctl(['put', key, value]);
  }
  async delete(key: string): Promise<void> {
    await this.ctl(['del', key]);
  }
  async list(prefix: string): Promise<{ entries: { key: string; value: string }[] }> {
    const lines = (await this.ctl(['get', '--prefix', prefix])).split('\n').filter((l) => l !== '');
    const entries = [];
    for (let k = 0; k + 1 < lines.length; k += 2) entries.push({ key: lines[k]!, value: lines[k + 1]! });
    return { entries };
  }
  async close(): Promise<void> {}
}
