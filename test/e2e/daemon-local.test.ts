/**
 * flanneld with the embedded store: several daemons, each in its own network
 * namespace, sharing one store directory on this machine.
 */
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHosts, type HostSet } from '../helpers/netns.js';
import { startDaemon, type DaemonProcess } from '../helpers/daemon.js';
import { LocalStore } from '../../src/subnet/local-store.js';
import { parseEnv } from '../../src/subnet/subnet-env.js';

let set: HostSet;
let dir: string;
const daemons: DaemonProcess[] = [];
const P = '/coreos.com/network';

before(async () => {
  set = await createHosts(4, { prefix: 'ftsloc', topology: 'bridge' });
  dir = await mkdtemp(join(tmpdir(), 'fts-local-'));
  const store = new LocalStore({ dir: join(dir, 'store') });
  await store.put(`${P}/config`, '{"Network":"10.30.0.0/16","Backend":{"Type":"alloc"}}');
  await store.close();
});

after(async () => {
  await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
  await set.destroy();
  await rm(dir, { recursive: true, force: true });
});

function start(i: number, extra: string[] = []): DaemonProcess {
  const h = set.hosts[i]!;
  const d = startDaemon([`--local-store=${join(dir, 'store')}`, `--iface=${h.iface}`, `--subnet-file=${join(dir, `h${i}.env`)}`, ...extra], {
    name: `h${i}`,
    prefix: ['ip', 'netns', 'exec', h.ns],
  });
  daemons.push(d);
  return d;
}

const subnet = async (i: number) => parseEnv(await readFile(join(dir, `h${i}.env`), 'utf8')).FLANNEL_SUBNET!;
const net = (sn: string) => sn.replace(/\.1\/24$/, '.0/24').replace(/\./g, '\\.');

test('daemons in separate namespaces get distinct subnets and see each other\'s leases', async () => {
  const ds = [0, 1, 2, 3].map((i) => start(i));
  await Promise.all(ds.map((d) => d.waitForLine(/running/)));
  const subnets = await Promise.all([0, 1, 2, 3].map(subnet));
  assert.equal(new Set(subnets).size, 4, `distinct: ${subnets}`);
  for (const [i, d] of ds.entries()) {
    for (const [j, sn] of subnets.entries()) {
      if (i !== j) await d.waitForLine(new RegExp(`lease added subnet=${net(sn)} publicIP=192\\.0\\.2\\.${j + 1}`), 10_000);
    }
  }
  const store = new LocalStore({ dir: join(dir, 'store') });
  const { entries } = await store.list(`${P}/subnets/`);
  await store.close();
  assert.deepEqual(entries.map((e) => e.value).sort(), [1, 2, 3, 4].map((n) => `{"PublicIP":"192.0.2.${n}","PublicIPv6":null,"BackendType":"alloc"}`));
});

test('SIGKILL and restart: same subnet; the peers see no removal', async () => {
  const victim = daemons[1]!;
  const before = await subnet(1);
  await victim.stop('SIGKILL');
  const again = start(1);
  await again.waitForLine(/running/);
  assert.equal(await subnet(1), before);
  assert.ok(!daemons[0]!.lines.some((l) => new RegExp(`lease removed subnet=${net(before)}`).test(l)));
});

test('--ip-masq installs flannel\'s masquerade rules in the host and removes them on SIGTERM', async () => {
  // Host 3 already runs a daemon: stop it and start one with --ip-masq.
  assert.equal(await daemons[3]!.stop('SIGTERM'), 0);
  const d = start(3, ['--ip-masq']);
  await d.waitForLine(/running/);
  const h = set.hosts[3]!;
  const sn = (await subnet(3)).replace(/\.1\/24$/, '.0/24');
  const nat = (await h.exec(['iptables', '-t', 'nat', '-S', 'POSTROUTING'], { check: true })).stdout;
  assert.match(nat, /-A POSTROUTING -s 10\.30\.0\.0\/16 -d 10\.30\.0\.0\/16 -m comment --comment "flanneld masq" -j RETURN/);
  assert.match(nat, /-A POSTROUTING -s 10\.30\.0\.0\/16 ! -d 224\.0\.0\.0\/4 -m comment --comment "flanneld masq" -j MASQUERADE/);
  assert.ok(nat.includes(`! -s 10.30.0.0/16 -d ${sn} -m comment --comment "flanneld masq" -j RETURN`), nat);
  assert.match(nat, /! -s 10\.30\.0\.0\/16 -d 10\.30\.0\.0\/16 -m comment --comment "flanneld masq" -j MASQUERADE/);
  const fwd = (await h.exec(['iptables', '-S', 'FORWARD'], { check: true })).stdout;
  assert.match(fwd, /-s 10\.30\.0\.0\/16 -m comment --comment "flanneld forward" -j ACCEPT/);
  assert.match(await readFile(join(dir, 'h3.env'), 'utf8'), /FLANNEL_IPMASQ=true/);
  // Someone flushes the nat table: the resync puts the rules back.
  await h.exec(['iptables', '-t', 'nat', '-F', 'POSTROUTING'], { check: true });
  await d.waitForLine(/installed rules table=nat/, 1000).catch(() => undefined);
  const start2 = Date.now();
  for (;;) {
    const again = (await h.exec(['iptables', '-t', 'nat', '-S', 'POSTROUTING'])).stdout;
    if (/flanneld masq/.test(again)) break;
    assert.ok(Date.now() - start2 < 12_000, 'rules restored within two resync periods');
    await new Promise((r) => setTimeout(r, 250));
  }
  assert.equal(await d.stop('SIGTERM'), 0);
  const after = (await h.exec(['iptables', '-t', 'nat', '-S', 'POSTROUTING'])).stdout + (await h.exec(['iptables', '-S', 'FORWARD'])).stdout;
  assert.doesNotMatch(after, /flanneld/);
});

test('healthz: GET /healthz answers 200, /metrics serves Prometheus text, unknown paths 404', async () => {
  const h = set.hosts[2]!;
  await daemons[2]!.stop('SIGTERM');
  const d = start(2, ['--healthz-ip=127.0.0.1', '--healthz-port=8471']);
  await d.waitForLine(/healthz listening/);
  const get = async (path: string) => {
    const r = await h.exec([process.execPath, '-e', `fetch('http://127.0.0.1:8471${path}').then(async r=>process.stdout.write(r.status+' '+await r.text()))`], { timeoutMs: 5000 });
    return r.stdout;
  };
  assert.equal(await get('/healthz'), '200 flanneld is running\n');
  await d.waitForLine(/ running/);
  assert.equal(await get('/readyz'), '200 flanneld is ready\n');
  assert.match(await get('/metrics'), /^200 /);
  assert.match(await get('/nope'), /^404/);
});
