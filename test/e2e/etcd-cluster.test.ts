/**
 * flanneld on a 3-member etcd cluster (each member in its own network
 * namespace, all three in --etcd-endpoints): members die under the daemons
 * (one they are connected to, then the leader) and every daemon fails over
 * within seconds, keeps its lease, follows lease changes made meanwhile and
 * renews on time (a short test TTL makes renewals frequent).
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHosts, run, waitFor, type HostSet } from '../helpers/netns.js';
import { startDaemon, type DaemonProcess } from '../helpers/daemon.js';
import { ETCDCTL_BIN, startEtcdCluster, type TestEtcdCluster } from '../helpers/etcd.js';

const P = '/coreos.com/network';
const TTL = 10;

describe('flanneld on a 3-member etcd cluster', { timeout: 180_000 }, () => {
  let set: HostSet;
  let cluster: TestEtcdCluster;
  let dir: string;
  const daemons: DaemonProcess[] = [];
  const memberHosts = [2, 3, 4];

  /** etcdctl against the running members, from member 2's namespace. */
  const ctl = async (args: string[]) => {
    const ns = set.hosts[memberHosts[0]!]!.ns;
    const r = await run('ip', ['netns', 'exec', ns, 'env', 'ETCDCTL_API=3', ETCDCTL_BIN, `--endpoints=${cluster.endpoints.join(',')}`, '--command-timeout=5s', ...args], {
      timeoutMs: 20_000,
    });
    return r;
  };
  const ownKey = async (i: number) => {
    const line = await daemons[i]!.waitForLine(/(acquired lease|reusing the lease)/);
    return `${P}/subnets/${/subnet=(\S+)/.exec(line)![1]!.replace('/', '-')}`;
  };
  const leaseValue = async (key: string) => (await ctl(['get', '--print-value-only', key])).stdout.trim();

  before(async () => {
    set = await createHosts(5, { prefix: 'ftsec', topology: 'bridge' });
    dir = await mkdtemp(join(tmpdir(), 'fts-ec-'));
    cluster = await startEtcdCluster(memberHosts.map((i) => ({ netns: set.hosts[i]!.ns, host: set.hosts[i]!.ip })));
    const put = await ctl(['put', `${P}/config`, '{"Network":"10.5.0.0/16","Backend":{"Type":"alloc"}}']);
    assert.equal(put.code, 0, put.stderr);
    for (const i of [0, 1]) {
      const h = set.hosts[i]!;
      // Each daemon lists the members in another order.
      const eps = [...cluster.endpoints.slice(i), ...cluster.endpoints.slice(0, i)];
      const d = startDaemon([`--etcd-endpoints=${eps.join(',')}`, `--iface=${h.iface}`, `--subnet-file=${join(dir, `h${i}.env`)}`, '--iptables-forward-rules=false'], {
        name: `h${i}`,
        prefix: ['ip', 'netns', 'exec', h.ns],
        env: { FLANNEL_TS_TEST_LEASE_TTL_SECONDS: String(TTL) },
      });
      daemons.push(d);
    }
    await Promise.all(daemons.map((d) => d.waitForLine(/running/, 30_000)));
  });

  after(async () => {
    await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
    await cluster?.cleanup();
    await set?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  /** The member a daemon holds a connection to (from the sockets of its namespace). */
  const connectedMember = async (i: number): Promise<number> => {
    const r = await set.hosts[i]!.exec(['ss', '-tnH', 'state', 'established', 'dport', '=', ':2379']);
    for (const [m, ep] of cluster.endpoints.entries()) if (r.stdout.includes(`${new URL(ep).hostname}:2379`)) return m;
    throw new Error(`h${i} holds no etcd connection: ${r.stdout}`);
  };

  /** After a member died: both daemons alive, see a new lease within seconds, and keep renewing their own. */
  const survives = async (what: string, newSubnet: string) => {
    const t0 = Date.now();
    const key = `${P}/subnets/${newSubnet.replace('/', '-')}`;
    // The operator's write retries too: right after a leader dies the cluster needs a moment for an election.
    await waitFor(async () => (await ctl(['put', key, '{"PublicIP":"198.18.0.9","PublicIPv6":null,"BackendType":"alloc"}'])).code === 0, 15_000, `${what}: etcdctl put`, 200);
    for (const d of daemons) await d.waitForLine(new RegExp(`lease added subnet=${newSubnet.replace(/\./g, '\\.')} `), 15_000);
    const seenIn = Date.now() - t0;
    assert.ok(seenIn < 15_000, `${what}: lease change seen after ${seenIn} ms`);
    // Renewals go on: past more than one TTL the daemons' own keys are still there, with new revisions.
    const keys = [await ownKey(0), await ownKey(1)];
    const revs = async () => Promise.all(keys.map(async (k) => JSON.parse((await ctl(['get', k, '-w', 'json'])).stdout).kvs?.[0]?.mod_revision as number | undefined));
    const r0 = await revs();
    await new Promise((r) => setTimeout(r, (TTL + 2) * 1000));
    const r1 = await revs();
    for (const [i, k] of keys.entries()) {
      assert.ok(r1[i] !== undefined, `${what}: h${i}'s lease ${k} still exists after a TTL`);
      assert.ok(r1[i]! > r0[i]!, `${what}: h${i} renewed (${r0[i]} -> ${r1[i]})`);
      assert.equal(JSON.parse(await leaseValue(k)).PublicIP, set.hosts[i]!.ip, `${what}: h${i} keeps its lease`);
    }
    for (const d of daemons) {
      assert.ok(d.alive, `${what}: ${d.name} is running`);
      assert.ok(!d.lines.some((l) => /lost our lease|taken over/.test(l)), `${what}: ${d.name} kept its lease`);
    }
  };

  test('the member a daemon is connected to dies: both fail over, follow changes and renew', async () => {
    const victim = await connectedMember(0);
    await cluster.kill(victim);
    await survives(`member m${victim} killed`, '10.5.201.0/24');
    await cluster.start(victim);
  });

  test('the leader dies: both fail over, follow changes and renew', async () => {
    const leader = await waitFor(() => {
      try {
        return cluster.leader() + 1;
      } catch {
        return null;
      }
    }, 10_000, 'an etcd leader');
    await cluster.kill(leader - 1);
    await survives(`leader m${leader - 1} killed`, '10.5.202.0/24');
    await cluster.start(leader - 1);
  });
});
