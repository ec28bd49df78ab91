/**
 * The seeds' AWS VPC and AliCloud VPC walkthroughs, step by step with our
 * binary: a real etcd, the network config put literally (etcd v3's
 * `etcdctl put` where the walkthroughs say `etcdctl set`), two flanneld
 * processes as two instances, the clouds faked on loopback. The route table
 * must end with one route per lease, each pointing at its instance; a lease
 * that goes away takes its route with it.
 *
 * The "instances" are two ends of a veth pair in this namespace: the
 * daemons need distinct interface addresses (the ENI lookup matches them),
 * and nothing is sent through them.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';
import { startEtcd, ETCDCTL_BIN, type TestEtcd } from '../helpers/etcd.js';
import { startDaemon, type DaemonProcess } from '../helpers/daemon.js';
import { registerCleanup, waitFor } from '../helpers/netns.js';
import { FakeEc2, FAKE_AWS_KEY } from '../helpers/fake-cloud/ec2.js';
import { FakeAliyun, FAKE_ALI_KEY, type FakeAliMetadata } from '../helpers/fake-cloud/aliyun.js';
import { FakeTencent, FAKE_TC_KEY } from '../helpers/fake-cloud/tencent.js';

const P = '/coreos.com/network';
const IFACES = [
  { name: 'ftcloud0', addr: '198.18.71.1' },
  { name: 'ftcloud1', addr: '198.18.71.2' },
];

let etcd: TestEtcd;
let client: Etcd3;
let dir: string;
let unregister: () => void;
const daemons: DaemonProcess[] = [];

function removeLinks(): void {
  try {
    execFileSync('ip', ['link', 'del', IFACES[0]!.name], { stdio: 'ignore' });
  } catch {
    // already gone
  }
}

before(async () => {
  removeLinks();
  execFileSync('ip', ['link', 'add', IFACES[0]!.name, 'type', 'veth', 'peer', 'name', IFACES[1]!.name]);
  unregister = registerCleanup(removeLinks);
  for (const i of IFACES) {
    execFileSync('ip', ['addr', 'add', `${i.addr}/32`, 'dev', i.name]);
    execFileSync('ip', ['link', 'set', i.name, 'up']);
  }
  etcd = await startEtcd();
  client = new Etcd3({ hosts: etcd.endpoint });
  dir = await mkdtemp(join(tmpdir(), 'fts-cloud-'));
});

after(async () => {
  await Promise.all(daemons.map((d) => d.stop('SIGKILL')));
  client.close();
  await etcd.cleanup();
  await rm(dir, { recursive: true, force: true });
  removeLinks();
  unregister();
});

/** The walkthrough's "Publish configuration in etcd" step, with etcd v3's etcdctl. */
function publishConfig(json: string): void {
  const r = spawnSync(ETCDCTL_BIN, [`--endpoints=${etcd.endpoint}`, 'put', `${P}/config`, json], { encoding: 'utf8', env: { ...process.env, ETCDCTL_API: '3' } });
  assert.equal(r.status, 0, r.stderr);
}

/** The walkthrough's "Run flannel daemon" step, on instance n. */
function flanneld(n: number, env: NodeJS.ProcessEnv): DaemonProcess {
  const d = startDaemon(
    [`--etcd-endpoints=${etcd.endpoint}`, `--iface=${IFACES[n]!.name}`, `--subnet-file=${join(dir, `h${n}.env`)}`, '--iptables-forward-rules=false', '--log-level=debug'],
    { name: `instance-${n + 1}`, env },
  );
  daemons.push(d);
  return d;
}

async function leases(): Promise<Map<string, string>> {
  const all = await client.getAll().prefix(`${P}/subnets/`).strings();
  return new Map(Object.entries(all).map(([k, v]) => [k.slice(`${P}/subnets/`.length).replace('-', '/'), v]));
}

async function reset(): Promise<void> {
  await Promise.all(daemons.splice(0).map((d) => d.stop('SIGKILL')));
  await client.delete().prefix(P);
}

describe('AWS VPC walkthrough', () => {
  let ec2: FakeEc2;
  before(async () => {
    await reset();
    ec2 = new FakeEc2();
    await ec2.start();
    ec2.addTable('rtb-0main', { main: true });
    ec2.addTable('rtb-0subnet', { subnetIds: ['subnet-0aaa1111'] });
  });
  after(() => ec2.stop());

  test('two instances: one route per lease in the subnet\'s route table, each to its instance; a lease gone takes its route', async () => {
    const hosts = [await ec2.addInstance(1, IFACES[0]!.addr), await ec2.addInstance(2, IFACES[1]!.addr)];
    publishConfig('{"Network":"10.20.0.0/16", "Backend": {"Type": "aws-vpc"}}');
    const env = (n: number): NodeJS.ProcessEnv => ({
      AWS_ACCESS_KEY_ID: FAKE_AWS_KEY.accessKeyId,
      AWS_SECRET_ACCESS_KEY: FAKE_AWS_KEY.secretAccessKey,
      AWS_CONFIG_FILE: '/nonexistent/aws-config',
      AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/aws-credentials',
      AWS_ENDPOINT_URL_EC2: ec2.endpoint,
      FLANNEL_CLOUD_ALLOW_HTTP: '1',
      AWS_EC2_METADATA_SERVICE_ENDPOINT: hosts[n]!.imds.endpoint,
    });
    const d = [flanneld(0, env(0)), flanneld(1, env(1))];
    await Promise.all(d.map((x) => x.waitForLine(/\brunning\b/, 20_000)));

    const byInstance = new Map(hosts.map((h) => [h.instance.privateIp, h.instance.eniId]));
    const expected = async () => {
      const l = await leases();
      return [...l].map(([subnet, json]) => ({ dest: subnet, target: byInstance.get(JSON.parse(json).PublicIP)!, state: 'active' })).sort((a, b) => a.dest.localeCompare(b.dest));
    };
    const flannelRoutes = () => ec2.routesOf('rtb-0subnet').filter((r) => r.dest.startsWith('10.20.')).sort((a, b) => a.dest.localeCompare(b.dest));
    await waitFor(async () => JSON.stringify(flannelRoutes()) === JSON.stringify(await expected()), 20_000, 'one route per lease');
    const l = await leases();
    assert.equal(l.size, 2);
    for (const json of l.values()) assert.match(json, /^\{"PublicIP":"198\.18\.71\.[12]","PublicIPv6":null\}$/, 'the lease JSON flannel writes for aws-vpc');
    assert.ok(ec2.routesOf('rtb-0subnet').some((r) => r.dest === '172.31.0.0/16' && r.target === 'local'), 'the VPC local route stays');
    assert.equal(hosts[0]!.instance.sourceDestCheck, false);
    assert.equal(hosts[1]!.instance.sourceDestCheck, false);

    // Instance 2 goes away and its lease expires: instance 1 deletes the route it left
    // (once it has seen that route: a route never seen pointing at the lease's host is not touched).
    const gone = [...l].find(([, json]) => JSON.parse(json).PublicIP === IFACES[1]!.addr)![0];
    await d[0]!.waitForLine(new RegExp(`another host's route is in place .*dest=${gone.replace(/[./]/g, '\\$&')}`), 60_000);
    await d[1]!.stop('SIGKILL');
    await client.delete().key(`${P}/subnets/${gone.replace('/', '-')}`);
    await waitFor(() => !flannelRoutes().some((r) => r.dest === gone), 20_000, 'the departed lease\'s route deleted');
    assert.equal(flannelRoutes().length, 1);
    assert.ok(d[0]!.lines.some((x) => /deleted route of a lease that went away/.test(x)));
  });
});

describe('AliCloud VPC walkthrough', () => {
  let ali: FakeAliyun;
  before(async () => {
    await reset();
    ali = new FakeAliyun();
    await ali.start();
  });
  after(() => ali.stop());

  test('two instances: one VRouter entry per lease, each to its instance', async () => {
    const ids = ['i-bp1walkthrough00001', 'i-bp1walkthrough00002'];
    const md = [await ali.addInstance(ids[0]!, IFACES[0]!.addr), await ali.addInstance(ids[1]!, IFACES[1]!.addr)];
    publishConfig('{"Network":"10.24.0.0/16", "Backend": {"Type": "ali-vpc"}}');
    const env = (n: number): NodeJS.ProcessEnv => ({
      ACCESS_KEY_ID: FAKE_ALI_KEY.id,
      ACCESS_KEY_SECRET: FAKE_ALI_KEY.secret,
      ALICLOUD_VPC_ENDPOINT: ali.endpoint,
      FLANNEL_CLOUD_ALLOW_HTTP: '1',
      ALICLOUD_METADATA_ENDPOINT: md[n]!.endpoint,
    });
    const d = [flanneld(0, env(0)), flanneld(1, env(1))];
    await Promise.all(d.map((x) => x.waitForLine(/\brunning\b/, 20_000)));
    const byIp = new Map([
      [IFACES[0]!.addr, ids[0]!],
      [IFACES[1]!.addr, ids[1]!],
    ]);
    const expected = async () =>
      [...(await leases())].map(([dest, json]) => ({ dest, nextHop: byIp.get(JSON.parse(json).PublicIP)!, status: 'Available' })).sort((a, b) => a.dest.localeCompare(b.dest));
    const entries = () => ali.customEntries().sort((a, b) => a.dest.localeCompare(b.dest));
    await waitFor(async () => JSON.stringify(entries()) === JSON.stringify(await expected()), 30_000, 'one entry per lease');
    assert.equal(entries().length, 2);
    for (const x of d) assert.ok(!x.lines.join('\n').includes(FAKE_ALI_KEY.secret), 'the secret is never logged');
  });
});

describe('Tencent Cloud VPC: two instances as flannel\'s tencent-vpc runs them', () => {
  let tc: FakeTencent;
  before(async () => {
    await reset();
    tc = new FakeTencent();
    await tc.start();
  });
  after(() => tc.stop());

  test('two instances: one route per lease to its instance; a lease gone takes the route its daemon wrote', async () => {
    const md = [await tc.addInstance(IFACES[0]!.addr, '52:54:00:71:00:01'), await tc.addInstance(IFACES[1]!.addr, '52:54:00:71:00:02')];
    publishConfig('{"Network":"10.26.0.0/16", "Backend": {"Type": "tencent-vpc"}}');
    const env = (n: number): NodeJS.ProcessEnv => ({
      ACCESS_KEY_ID: FAKE_TC_KEY.id,
      ACCESS_KEY_SECRET: FAKE_TC_KEY.secret,
      TENCENTCLOUD_VPC_ENDPOINT: tc.endpoint,
      FLANNEL_CLOUD_ALLOW_HTTP: '1',
      TENCENTCLOUD_METADATA_ENDPOINT: md[n]!.endpoint,
    });
    const d = [flanneld(0, env(0)), flanneld(1, env(1))];
    await Promise.all(d.map((x) => x.waitForLine(/\brunning\b/, 20_000)));
    const expected = async () => [...(await leases())].map(([dest, json]) => ({ dest, gateway: JSON.parse(json).PublicIP, enabled: true })).sort((a, b) => a.dest.localeCompare(b.dest));
    const routes = () => tc.userRoutes().sort((a, b) => a.dest.localeCompare(b.dest));
    await waitFor(async () => JSON.stringify(routes()) === JSON.stringify(await expected()), 30_000, 'one route per lease');
    const l = await leases();
    assert.equal(l.size, 2);
    for (const json of l.values()) assert.match(json, /^\{"PublicIP":"198\.18\.71\.[12]","PublicIPv6":null\}$/, 'the lease JSON flannel writes for tencent-vpc');
    // Instance 2 goes away and its lease expires: instance 1 deletes the route instance 2 wrote
    // (once it has seen that route while the lease lived: a route never seen is not touched).
    const gone = [...l].find(([, json]) => JSON.parse(json).PublicIP === IFACES[1]!.addr)![0];
    await d[0]!.waitForLine(new RegExp(`another host's route is in place .*dest=${gone.replace(/[./]/g, '\\$&')}`), 60_000);
    await d[1]!.stop('SIGKILL');
    await client.delete().key(`${P}/subnets/${gone.replace('/', '-')}`);
    await waitFor(() => !routes().some((r) => r.dest === gone), 30_000, 'the departed lease\'s route deleted');
    assert.equal(routes().length, 1);
    for (const x of d) assert.ok(!x.lines.join('\n').includes(FAKE_TC_KEY.secret), 'the secret is never logged');
  });
});
