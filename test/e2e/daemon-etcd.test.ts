/**
 * flanneld (alloc backend) against a real etcd on loopback. The daemons run
 * in the root namespace on `lo` with distinct --public-ip values, so no
 * packet leaves the machine; only their leases matter here.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { startEtcd, ETCDCTL_BIN, type TestEtcd } from '../helpers/etcd.js';
import { startDaemon, type DaemonProcess } from '../helpers/daemon.js';
import { parseEnv } from '../../src/subnet/subnet-env.js';

const P = '/coreos.com/network';
const ALLOC = '{"Network":"10.20.0.0/16","Backend":{"Type":"alloc"}}';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let etcd: TestEtcd;
let client: Etcd3;
let dir: string;
const daemons: DaemonProcess[] = [];

function daemon(n: number, extra: string[] = [], env: NodeJS.ProcessEnv = {}): DaemonProcess {
  const d = startDaemon(
    // --iptables-forward-rules=false: these daemons run in the machine's own namespace; leave its firewall alone.
    [`--etcd-endpoints=${etcd.endpoint}`, '--iface=lo', `--public-ip=192.0.2.${n}`, `--subnet-file=${join(dir, `h${n}.env`)}`, '--iptables-forward-rules=false', ...extra],
    { name: `h${n}`, env },
  );
  daemons.push(d);
  return d;
}

async function subnetOf(n: number): Promise<string> {
  return parseEnv(await readFile(join(dir, `h${n}.env`), 'utf8')).FLANNEL_SUBNET!;
}

async function leases(): Promise<Record<string, string>> {
  return client.getAll().prefix(`${P}/subnets/`).strings();
}

async function resetStore(config = ALLOC): Promise<void> {
  await Promise.all(daemons.splice(0).map((d) => d.stop('SIGKILL')));
  await client.delete().prefix(P);
  await client.put(`${P}/config`).value(config);
}

before(async () => {
  etcd = await startEtcd();
  client = new Etcd3({ hosts: etcd.endpoint });
  dir = await mkdtemp(join(tmpdir(), 'fts-daemon-'));
});

after(async () => {
  await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
  client.close();
  await etcd.cleanup();
  await rm(dir, { recursive: true, force: true });
});

describe('flanneld with etcd', () => {
  test('the seeds step, literally: etcdctl put config, flanneld writes subnet.env and a lease', async () => {
    await resetStore();
    const put = spawnSync(ETCDCTL_BIN, ['--endpoints', etcd.endpoint, 'put', '/coreos.com/network/config', '{"Network":"10.20.0.0/16","Backend":{"Type":"alloc"}}'], {
      env: { ...process.env, ETCDCTL_API: '3' },
      encoding: 'utf8',
    });
    assert.equal(put.status, 0, put.stderr);
    // No --iface: the interface of the default route, as flannel picks it.
    const d = startDaemon([`--etcd-endpoints=${etcd.endpoint}`, `--subnet-file=${join(dir, 'seed.env')}`, '--iptables-forward-rules=false'], { name: 'seed' });
    daemons.push(d);
    await d.waitForLine(/running/);
    const env = parseEnv(await readFile(join(dir, 'seed.env'), 'utf8'));
    assert.equal(env.FLANNEL_NETWORK, '10.20.0.0/16');
    assert.match(env.FLANNEL_SUBNET!, /^10\.20\.\d+\.1\/24$/);
    assert.equal(env.FLANNEL_IPMASQ, 'false');
    const all = await leases();
    const key = `${P}/subnets/${env.FLANNEL_SUBNET!.replace('.1/24', '.0-24')}`;
    assert.ok(all[key], `lease key ${key} in ${Object.keys(all)}`);
    assert.match(all[key]!, /^\{"PublicIP":"[\d.]+","PublicIPv6":null,"BackendType":"alloc"\}$/);
  });

  test('two daemons get distinct subnets; lease keys, JSON and 24 h TTL as flannel', async () => {
    await resetStore();
    const [a, b] = [daemon(1), daemon(2)];
    await Promise.all([a.waitForLine(/running/), b.waitForLine(/running/)]);
    const [sa, sb] = [await subnetOf(1), await subnetOf(2)];
    assert.notEqual(sa, sb);
    const all = await leases();
    assert.equal(Object.keys(all).length, 2);
    for (const [n, sn] of [[1, sa], [2, sb]] as const) {
      const key = `${P}/subnets/${sn.replace(/\.1\/24$/, '.0-24')}`;
      assert.equal(all[key], `{"PublicIP":"192.0.2.${n}","PublicIPv6":null,"BackendType":"alloc"}`);
      const kv = await client.get(key).exec();
      const leaseId = kv.kvs[0]!.lease;
      assert.notEqual(String(leaseId), '0', 'key attached to an etcd lease');
    }
    // Each daemon learns of the other.
    await a.waitForLine(new RegExp(`lease added subnet=${sb.replace(/\.1\//, '.0/').replace(/\./g, '\\.')}`));
    await b.waitForLine(new RegExp(`lease added subnet=${sa.replace(/\.1\//, '.0/').replace(/\./g, '\\.')}`));
  });

  test('etcd lease TTL is 24 h', async () => {
    await resetStore();
    const a = daemon(1);
    await a.waitForLine(/running/);
    // Lease ids are 64-bit: read them as strings through the client, not via JSON numbers.
    const kv = await client.getAll().prefix(`${P}/subnets/`).exec();
    const lease = BigInt(String(kv.kvs[0]!.lease)).toString(16);
    const ttl = spawnSync(ETCDCTL_BIN, ['--endpoints', etcd.endpoint, 'lease', 'timetolive', lease, '-w', 'json'], { env: { ...process.env, ETCDCTL_API: '3' }, encoding: 'utf8' });
    const info = JSON.parse(ttl.stdout) as { ttl: number; 'granted-ttl': number };
    assert.equal(info['granted-ttl'], 86400);
    assert.ok(info.ttl > 86000);
  });

  test('restart after SIGTERM and after SIGKILL: the same subnet comes back', async () => {
    await resetStore();
    let a = daemon(1);
    await a.waitForLine(/running/);
    const first = await subnetOf(1);
    assert.equal(await a.stop('SIGTERM'), 0, 'clean exit on SIGTERM');
    a = daemon(1);
    await a.waitForLine(/running/);
    assert.equal(await subnetOf(1), first);
    await a.stop('SIGKILL');
    // Even with a different PublicIP the subnet in subnet.env is reused when free.
    await client.delete().prefix(`${P}/subnets/`);
    a = daemon(1);
    await a.waitForLine(/running/);
    assert.equal(await subnetOf(1), first);
    assert.equal(Object.keys(await leases()).length, 1);
  });

  test('the lease is renewed before it expires (short test TTL)', async () => {
    await resetStore();
    const a = daemon(1, ['--subnet-lease-renew-margin=1'], { FLANNEL_TS_TEST_LEASE_TTL_SECONDS: '4' });
    await a.waitForLine(/running/);
    const sn = await subnetOf(1);
    await a.waitForLine(/renewed lease/, 6000);
    await sleep(5000); // longer than one TTL: without renewals the key would be gone
    const all = await leases();
    assert.ok(all[`${P}/subnets/${sn.replace(/\.1\/24$/, '.0-24')}`], 'lease still present after more than one TTL');
    assert.ok(a.lines.filter((l) => /renewed lease/.test(l)).length >= 2);
  });

  test('a lease created while a peer is starting is still seen by that peer (gap-free list+watch)', async () => {
    await resetStore();
    const written: string[] = [];
    let writing = true;
    const writer = (async () => {
      for (let i = 0; writing && i < 250; i++) {
        const key = `${P}/subnets/10.20.${i}.0-24`;
        if (i === 0) continue;
        // Create-if-absent, as a flanneld would: B may hold one of these subnets by now, and its lease is B's.
        const r = await client.if(key, 'Create', '==', 0).then(client.put(key).value(`{"PublicIP":"198.18.0.${i}","PublicIPv6":null,"BackendType":"alloc"}`)).commit();
        if (r.succeeded) written.push(`10.20.${i}.0/24`);
        await sleep(5);
      }
    })();
    await sleep(50);
    // Debug level: a burst logs one summary line at info, the per-lease lines (which this test checks) at debug.
    const b = daemon(2, ['--log-level=debug']);
    await b.waitForLine(/running/);
    await sleep(300);
    writing = false;
    await writer;
    // Every lease written before, during and after B's start must be known to B.
    const mine = (await subnetOf(2)).replace(/\.1\//, '.0/');
    for (const sn of written) {
      if (sn === mine) continue;
      await b.waitForLine(new RegExp(`lease added subnet=${sn.replace(/\./g, '\\.')} `), 5000);
    }
  });

  test('etcd stopped for 20 s and restarted: daemons survive, keep leases, see later changes', async () => {
    await resetStore();
    const [a, b] = [daemon(1), daemon(2)];
    await Promise.all([a.waitForLine(/running/), b.waitForLine(/running/)]);
    const before = await leases();
    await etcd.stop();
    await sleep(20_000);
    assert.ok(a.alive && b.alive, 'daemons survive the outage');
    await a.waitForLine(/lost the lease watch|cannot list leases/);
    await etcd.start();
    await a.waitForLine(/store reachable again/, 30_000);
    await b.waitForLine(/store reachable again/, 30_000);
    assert.deepEqual(await leases(), before, 'leases kept');
    await client.put(`${P}/subnets/10.20.250.0-24`).value('{"PublicIP":"198.18.0.250","PublicIPv6":null}');
    await a.waitForLine(/lease added subnet=10\.20\.250\.0\/24/, 10_000);
    await b.waitForLine(/lease added subnet=10\.20\.250\.0\/24/, 10_000);
    // Warned once per state change, not once per retry.
    assert.ok(a.lines.filter((l) => /WARN .*lost the lease watch|WARN .*cannot list leases/.test(l)).length <= 2);
  });

  test('range exhaustion: a clear error and a non-zero exit', async () => {
    await resetStore('{"Network":"10.20.0.0/28","SubnetLen":30,"Backend":{"Type":"alloc"}}');
    for (const ip of [4, 8, 12]) await client.put(`${P}/subnets/10.20.0.${ip}-30`).value(`{"PublicIP":"198.18.1.${ip}","PublicIPv6":null}`);
    const d = daemon(1);
    assert.equal(await d.exited, 1);
    assert.ok(d.lines.some((l) => /ERROR .*out of subnets: every \/30 between 10\.20\.0\.4 and 10\.20\.0\.12/.test(l)), d.lines.join('\n'));
  });

  test('invalid config: one clear error naming the field, exit 1, no subnet.env written', async () => {
    await resetStore('{"Network":"10.20.0.0/16","SubnetLen":12,"Backend":{"Type":"alloc"}}');
    const d = daemon(7);
    assert.equal(await d.exited, 1);
    assert.ok(d.lines.some((l) => /ERROR .*SubnetLen: \/12 is too short/.test(l)), d.lines.join('\n'));
    await assert.rejects(stat(join(dir, 'h7.env')));
    await client.put(`${P}/config`).value('{"Network":"10.20.0.0/16","Backend":{"Type":"bogus"}}');
    const d2 = daemon(7);
    assert.equal(await d2.exited, 1);
    assert.ok(d2.lines.some((l) => /unknown backend type "bogus"/.test(l)));
    await client.put(`${P}/config`).value('{"Network": oops');
    const d3 = daemon(7);
    assert.equal(await d3.exited, 1);
    assert.ok(d3.lines.some((l) => /malformed JSON/.test(l)));
    assert.equal(Object.keys(await leases()).length, 0, 'no lease taken');
  });

  test('malformed lease JSON from another writer is logged and skipped; the daemon keeps running', async () => {
    await resetStore();
    await client.put(`${P}/subnets/10.20.9.0-24`).value('{"PublicIP": nope');
    const a = daemon(1);
    await a.waitForLine(/running/);
    await a.waitForLine(/WARN .*malformed lease .*10\.20\.9\.0-24/);
    // Above the 100 candidates a lease is allocated from, so never the daemon's own subnet.
    await client.put(`${P}/subnets/10.20.210.0-24`).value('[]');
    await client.put(`${P}/subnets/10.20.211.0-24`).value('{"PublicIP":"198.18.0.11","PublicIPv6":null}');
    await a.waitForLine(/lease added subnet=10\.20\.211\.0\/24/);
    assert.ok(a.alive);
    assert.notEqual(await subnetOf(1), '10.20.9.1/24');
  });
});

describe('flanneld with etcd: start-up order and prefixes', () => {
  test('no config yet: the daemon waits (one warning), then starts when the config appears', async () => {
    await resetStore();
    await client.delete().key(`${P}/config`);
    const d = daemon(3);
    await d.waitForLine(/WARN .*reading the network config: waiting and retrying .*network config not found at \/coreos\.com\/network\/config/);
    await sleep(1500);
    assert.ok(d.alive);
    assert.equal(d.lines.filter((l) => /WARN/.test(l)).length, 1, 'warned once, not once per retry');
    await client.put(`${P}/config`).value(ALLOC);
    await d.waitForLine(/running/, 15_000);
  });

  test('SIGTERM while etcd is unreachable: a prompt, clean exit', async () => {
    const d = startDaemon(['--etcd-endpoints=http://127.0.0.1:1', '--iface=lo', `--subnet-file=${join(dir, 'none.env')}`, '--iptables-forward-rules=false'], { name: 'noetcd' });
    daemons.push(d);
    await d.waitForLine(/WARN .*waiting and retrying .*127\.0\.0\.1:1/);
    await sleep(6000); // into a multi-second backoff
    const t0 = Date.now();
    assert.equal(await d.stop('SIGTERM'), 0);
    assert.ok(Date.now() - t0 < 2000, `stopped in ${Date.now() - t0} ms`);
    await assert.rejects(stat(join(dir, 'none.env')));
  });

  test('--etcd-prefix puts config and leases under another prefix', async () => {
    await resetStore();
    await client.put('/custom/net/config').value('{"Network":"10.40.0.0/16","Backend":{"Type":"alloc"}}');
    const d = daemon(4, ['--etcd-prefix=/custom/net']);
    await d.waitForLine(/running/);
    const keys = Object.keys(await client.getAll().prefix('/custom/net/subnets/').strings());
    assert.equal(keys.length, 1);
    assert.match(keys[0]!, /^\/custom\/net\/subnets\/10\.40\.\d+\.0-24$/);
    await client.delete().prefix('/custom/');
  });
});

describe('flanneld with etcd over TLS and client certificates', () => {
  let tls: TestEtcd;
  before(async () => {
    tls = await startEtcd({ tls: true });
  });
  after(async () => {
    await tls.cleanup();
  });

  test('leases through --etcd-cafile/--etcd-certfile/--etcd-keyfile; refused without a client cert', async () => {
    const c = new Etcd3({ hosts: tls.endpoint, credentials: { rootCertificate: await readFile(tls.caFile!), certChain: await readFile(tls.certFile!), privateKey: await readFile(tls.keyFile!) } });
    await c.put(`${P}/config`).value(ALLOC);
    const args = [`--etcd-endpoints=${tls.endpoint}`, '--iface=lo', '--public-ip=192.0.2.5', `--subnet-file=${join(dir, 'tls.env')}`, '--iptables-forward-rules=false'];
    const good = startDaemon([...args, `--etcd-cafile=${tls.caFile}`, `--etcd-certfile=${tls.certFile}`, `--etcd-keyfile=${tls.keyFile}`], { name: 'tls' });
    daemons.push(good);
    await good.waitForLine(/running/);
    const all = await c.getAll().prefix(`${P}/subnets/`).strings();
    assert.deepEqual(Object.values(all), ['{"PublicIP":"192.0.2.5","PublicIPv6":null,"BackendType":"alloc"}']);
    await good.stop();
    // Without the client certificate etcd refuses: the daemon keeps retrying and says why.
    const bad = startDaemon([...args, `--etcd-cafile=${tls.caFile}`], { name: 'tls-nocert' });
    daemons.push(bad);
    await bad.waitForLine(/WARN .*retrying/, 20_000);
    assert.ok(!bad.lines.some((l) => /running/.test(l)));
    await bad.stop();
    c.close();
  });
});

describe('flanneld with etcd authentication (--etcd-username/--etcd-password)', () => {
  let authEtcd: TestEtcd;
  const PASSWORD = 'Sup3r-secret-pw';
  const ctl = (...args: string[]) =>
    spawnSync(ETCDCTL_BIN, ['--endpoints', authEtcd.endpoint, ...args], { env: { ...process.env, ETCDCTL_API: '3' }, encoding: 'utf8' });
  before(async () => {
    authEtcd = await startEtcd();
    for (const args of [['user', 'add', `root:${PASSWORD}`, '--interactive=false'], ['auth', 'enable']]) {
      const r = ctl(...args);
      assert.equal(r.status, 0, r.stderr);
    }
    const put = ctl('--user', `root:${PASSWORD}`, 'put', `${P}/config`, ALLOC);
    assert.equal(put.status, 0, put.stderr);
  });
  after(async () => {
    await authEtcd.cleanup();
  });

  test('leases with the right password; a wrong one is retried with a warning; the password is never logged', async () => {
    const args = (pw: string) => [`--etcd-endpoints=${authEtcd.endpoint}`, '--iface=lo', '--public-ip=192.0.2.6', `--subnet-file=${join(dir, 'auth.env')}`, '--iptables-forward-rules=false', '--etcd-username=root', `--etcd-password=${pw}`];
    const good = startDaemon(args(PASSWORD), { name: 'auth' });
    daemons.push(good);
    await good.waitForLine(/running/);
    const leases = ctl('--user', `root:${PASSWORD}`, 'get', '--prefix', `${P}/subnets/`, '--print-value-only');
    assert.match(leases.stdout, /\{"PublicIP":"192\.0\.2\.6","PublicIPv6":null,"BackendType":"alloc"\}/);
    await good.stop();
    const bad = startDaemon(args('wrong-password-123'), { name: 'auth-bad' });
    daemons.push(bad);
    await bad.waitForLine(/WARN .*retrying/, 20_000);
    await bad.stop();
    // Also via the environment, as FLANNELD_ETCD_PASSWORD.
    const viaEnv = startDaemon(args(PASSWORD).filter((a) => !a.startsWith('--etcd-password')), { name: 'auth-env', env: { FLANNELD_ETCD_PASSWORD: PASSWORD } });
    daemons.push(viaEnv);
    await viaEnv.waitForLine(/running/);
    await viaEnv.stop();
    for (const d of [good, bad, viaEnv]) {
      assert.ok(!d.lines.some((l) => l.includes(PASSWORD) || l.includes('wrong-password-123')), `no password in the log of ${d.name}`);
    }
  });
});
