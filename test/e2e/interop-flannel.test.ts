/**
 * Interop: one host runs flannel-ts, the other flannel's own flanneld
 * v0.19.2, with the same backend (vxlan, then udp), on one etcd (TLS
 * with client certificates: flannel v0.19 talks to etcd v3 only so). They
 * must read each other's leases and ping each other pod to pod both ways.
 * Runs when FLANNELD_REF names flannel's binary (built by
 * ../shared/tools/build-reference-flanneld.sh); skipped with a message otherwise.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHosts, run, waitFor, type HostSet } from '../helpers/netns.js';
import { startDaemon, FLANNELCTL, type DaemonProcess } from '../helpers/daemon.js';
import { startEtcd, type TestEtcd } from '../helpers/etcd.js';
import { attachPodBridge } from '../helpers/pod-bridge.js';
import { parseEnv } from '../../src/subnet/subnet-env.js';

const REF = process.env.FLANNELD_REF ?? '';
const skip = REF && existsSync(REF) ? false : 'FLANNELD_REF does not name flannel\'s flanneld v0.19.2 (build it with ../shared/tools/build-reference-flanneld.sh); interop not tested';
const P = '/coreos.com/network';

for (const [backend, mtu] of [['vxlan', '1450'], ['udp', '1472']] as const) describe(`${backend} next to flannel's own flanneld v0.19.2`, { skip, timeout: 120_000 }, () => {
  let set: HostSet;
  let etcd: TestEtcd;
  let dir: string;
  const daemons: DaemonProcess[] = [];
  const pod: string[] = [];

  before(async () => {
    set = await createHosts(2, { prefix: `ftsix${backend[0]}`, topology: 'bridge' });
    dir = await mkdtemp(join(tmpdir(), 'fts-ix-'));
    await run('ip', ['-n', set.switchNs!, 'addr', 'add', '192.0.2.254/24', 'dev', 'br0'], { check: true });
    etcd = await startEtcd({ netns: set.switchNs!, host: '192.0.2.254', tls: true });
    const tls = [`--etcd-cafile=${etcd.caFile}`, `--etcd-certfile=${etcd.certFile}`, `--etcd-keyfile=${etcd.keyFile}`];
    const put = await run('ip', ['netns', 'exec', set.switchNs!, process.execPath, FLANNELCTL, `--etcd-endpoints=${etcd.endpoint}`, ...tls, 'put', `${P}/config`, `{"Network":"10.5.0.0/16","Backend":{"Type":"${backend}"}}`]);
    assert.equal(put.code, 0, put.stderr);
    const args = (i: number) => [`--etcd-endpoints=${etcd.endpoint}`, ...tls, `--iface=${set.hosts[i]!.iface}`, `--subnet-file=${join(dir, `h${i}.env`)}`];
    daemons.push(startDaemon(args(0), { name: 'flannel-ts', prefix: ['ip', 'netns', 'exec', set.hosts[0]!.ns] }));
    daemons.push(startDaemon([...args(1), '--v=1'], { name: 'flannel', prefix: ['ip', 'netns', 'exec', set.hosts[1]!.ns], program: [REF] }));
    await daemons[0]!.waitForLine(/running/, 30_000);
    await waitFor(() => existsSync(join(dir, 'h1.env')), 30_000, "flannel's subnet.env");
    for (const [i, h] of set.hosts.entries()) {
      const env = parseEnv(await readFile(join(dir, `h${i}.env`), 'utf8'));
      assert.equal(env.FLANNEL_MTU, mtu, `host ${i}: ${backend} MTU`);
      await attachPodBridge(h, env);
      pod[i] = env.FLANNEL_SUBNET!.split('/')[0]!;
    }
  });

  after(async () => {
    await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
    await etcd?.cleanup();
    await set?.destroy();
    await rm(dir, { recursive: true, force: true });
  });

  test('they ping each other pod to pod, both ways', async () => {
    for (const [from, to] of [[0, 1], [1, 0]] as const) {
      await waitFor(
        async () => (await set.hosts[from]!.exec(['ping', '-c', '1', '-W', '1', '-I', pod[from]!, pod[to]!], { timeoutMs: 5000 })).code === 0,
        30_000,
        `ping ${from === 0 ? 'flannel-ts -> flannel' : 'flannel -> flannel-ts'}`,
        300,
      );
    }
  });
});
