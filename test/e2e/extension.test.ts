/**
 * The extension backend end to end: three hosts whose network config's
 * commands build the overlay themselves (a route per remote lease via its
 * PublicIP, as host-gw would), pods pinging across; a removed lease's
 * route taken away by SubnetRemoveCommand; a failing command reported with
 * its exit code and stderr and retried; a hanging one killed after the
 * timeout with what it started, the daemon going on.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { run, waitFor } from '../helpers/netns.js';
import { attachPodBridge } from '../helpers/pod-bridge.js';
import { localCluster, P, pingMatrix, startHost, subnetEnv, teardown, type Cluster } from '../helpers/udp-cluster.js';
import type { LocalStore } from '../../src/subnet/local-store.js';

function config(dir: string): string {
  const add = [
    'case "$SUBNET" in',
    '  10.7.99.0/24) exec sleep 600 ;;',
    `  10.7.98.0/24) [ -e ${dir}/allow ] || { echo "not allowed yet" >&2; exit 3; } ;;`,
    'esac',
    'me=$(ip -o -4 addr show dev eth0 | awk \'{print $4}\' | cut -d/ -f1)',
    `read -r data; echo "$data" > "${dir}/data-$(echo "$SUBNET" | tr / _)-at-$me"`,
    'ip route replace "$SUBNET" via "$PUBLIC_IP" dev eth0',
  ].join('\n');
  return JSON.stringify({
    Network: '10.7.0.0/16',
    // The hosts' own leases stay below the subnets this file writes by hand (10.7.96-99.0/24):
    // a host allocated 10.7.99.0/24 saw its key taken over and stopped (CI, 2026-12-06).
    SubnetMax: '10.7.90.0',
    Backend: {
      Type: 'extension',
      PreStartupCommand: 'cat /sys/class/net/eth0/address',
      PostStartupCommand: `echo "$NETWORK $SUBNET $PUBLIC_IP" > ${dir}/post-$PUBLIC_IP`,
      SubnetAddCommand: add,
      SubnetRemoveCommand: 'ip route del "$SUBNET" via "$PUBLIC_IP" dev eth0',
    },
  });
}

const routeTo = async (c: Cluster, i: number, subnet: string) => (await c.set.hosts[i]!.exec(['ip', '-4', 'route', 'show', subnet])).stdout.trim();

describe('extension backend', { concurrency: false }, () => {
  let c: Cluster | undefined;
  let store: LocalStore;

  before(async () => {
    ({ c, store } = await localCluster(3, 'fx'));
    await store.put(`${P}/config`, config(c.dir));
    c.hostEnv = () => ({ FLANNEL_EXTENSION_COMMAND_TIMEOUT: '2' });
    const ds = c.set.hosts.map((_, i) => startHost(c!, i));
    await Promise.all(ds.map((d) => d.waitForLine(/ running/, 20_000)));
    for (const [i, h] of c.set.hosts.entries()) {
      const env = await subnetEnv(c, i);
      await attachPodBridge(h, env);
      c.pod[i] = env.FLANNEL_SUBNET!.split('/')[0]!;
    }
  });

  after(async () => {
    await teardown(c);
    await run('pkill', ['-fx', 'sleep 600']);
  });

  test('the commands alone make the overlay: BackendData from PreStartupCommand, PostStartupCommand\'s variables, routes from SubnetAddCommand; pods ping across three hosts', async () => {
    const env0 = await subnetEnv(c!, 0);
    assert.equal(env0.FLANNEL_MTU, '1500', 'the interface MTU, as flannel');
    const sn0 = env0.FLANNEL_SUBNET!.replace(/\.1\//, '.0/');
    const mac0 = (await c!.set.hosts[0]!.exec(['cat', '/sys/class/net/eth0/address'])).stdout.trim();
    const lease = await store.get(`${P}/subnets/${sn0.replace('/', '-')}`);
    assert.equal(lease!.value, JSON.stringify({ PublicIP: '192.0.2.1', PublicIPv6: null, BackendType: 'extension', BackendData: mac0 }));
    assert.equal((await readFile(join(c!.dir, 'post-192.0.2.1'), 'utf8')).trim(), `10.7.0.0/16 ${sn0} 192.0.2.1`);
    // Host 1 ran SubnetAddCommand for host 0's lease with host 0's BackendData on stdin.
    await waitFor(async () => (await readFile(join(c!.dir, `data-${sn0.replace('/', '_')}-at-192.0.2.2`), 'utf8').catch(() => '')).trim() === mac0, 10_000, 'BackendData on stdin');
    assert.match(await routeTo(c!, 1, sn0), /via 192\.0\.2\.1 dev eth0/);
    await pingMatrix(c!);
  });

  test('a removed lease runs SubnetRemoveCommand and its route goes; the owner restores it and the route comes back', async () => {
    const sn2 = (await subnetEnv(c!, 2)).FLANNEL_SUBNET!.replace(/\.1\//, '.0/');
    await store.delete(`${P}/subnets/${sn2.replace('/', '-')}`);
    // The owner writes it back at once: the route may go and come back; both commands ran.
    await c!.daemons[0]!.waitForLine(new RegExp(`ran SubnetRemoveCommand subnet=${sn2.replace(/[./]/g, '\\$&')}`), 15_000);
    await waitFor(async () => /via 192\.0\.2\.3/.test(await routeTo(c!, 0, sn2)), 15_000, 'route back after the restore');
  });

  test('a failing command is reported with its exit code and stderr and retried; a hanging one is killed after the timeout, the daemon goes on', async () => {
    const lease = (ip: string) => JSON.stringify({ PublicIP: ip, PublicIPv6: null, BackendType: 'extension', BackendData: 'x' });
    await store.put(`${P}/subnets/10.7.98.0-24`, lease('192.0.2.98'));
    await c!.daemons[0]!.waitForLine(/SubnetAddCommand failed; retrying at the next event subnet=10\.7\.98\.0\/24 .*error="exit 3: not allowed yet"/, 15_000);
    assert.equal(await routeTo(c!, 0, '10.7.98.0/24'), '');
    await writeFile(join(c!.dir, 'allow'), '');
    await store.put(`${P}/subnets/10.7.97.0-24`, lease('192.0.2.97'));
    await waitFor(async () => /via 192\.0\.2\.98/.test(await routeTo(c!, 0, '10.7.98.0/24')), 20_000, 'the failed add retried');

    await store.put(`${P}/subnets/10.7.99.0-24`, lease('192.0.2.99'));
    await c!.daemons[0]!.waitForLine(/SubnetAddCommand failed; retrying at the next event subnet=10\.7\.99\.0\/24 .*timed out after 2 s and was killed/, 20_000);
    // Removing a lease whose add never succeeded runs nothing and ends its retries.
    await store.delete(`${P}/subnets/10.7.99.0-24`);
    // What the commands started (on every host, retried until the removal) is gone with them once their timeouts pass.
    await waitFor(async () => (await run('pgrep', ['-fx', 'sleep 600'])).stdout.trim() === '', 15_000, 'no hung command left');
    await store.put(`${P}/subnets/10.7.96.0-24`, lease('192.0.2.96'));
    await waitFor(async () => /via 192\.0\.2\.96/.test(await routeTo(c!, 0, '10.7.96.0/24')), 20_000, 'later events still handled');
    for (const d of c!.daemons) assert.ok(d!.alive);
    await pingMatrix(c!);
  });
});
