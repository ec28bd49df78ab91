/**
 * aws-vpc against a fake EC2 on loopback, through the real
 * @aws-sdk/client-ec2 (Query API, SigV4, XML) and a fake IMDSv2.
 */
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { FakeEc2, FAKE_AWS_KEY, type FakeImds, type FakeInstance } from '../helpers/fake-cloud/ec2.js';
import { startCloudBackend, type CloudHarness } from '../helpers/cloud-backend.js';
import { makeLease } from '../helpers/leases.js';
import { waitFor } from '../helpers/netns.js';

const WALKTHROUGH = '{"Network":"10.20.0.0/16","Backend":{"Type":"aws-vpc"}}';
let ec2: FakeEc2;
let host1: { instance: FakeInstance; imds: FakeImds };
let host2: { instance: FakeInstance; imds: FakeImds };
const running: CloudHarness[] = [];

function useKeys(): void {
  process.env.AWS_ACCESS_KEY_ID = FAKE_AWS_KEY.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = FAKE_AWS_KEY.secretAccessKey;
  delete process.env.AWS_SESSION_TOKEN;
}

/** The config, and the host's endpoints in its environment (never in the shared config). */
function config(extra: Record<string, unknown> = {}, imds = host1.imds): string {
  process.env.FLANNEL_CLOUD_ALLOW_HTTP = '1';
  process.env.AWS_ENDPOINT_URL_EC2 = ec2.endpoint;
  process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT = imds.endpoint;
  return JSON.stringify({ Network: '10.20.0.0/16', Backend: { Type: 'aws-vpc', ...extra } });
}

async function start(cfg = config(), own = { subnet: '10.20.5.0/24', ifaceAddr: host1.instance.privateIp }): Promise<CloudHarness> {
  const h = await startCloudBackend(cfg, own);
  running.push(h);
  return h;
}

before(async () => {
  // Nothing of the SDK's credential chain may leave loopback or read the user's files.
  process.env.AWS_CONFIG_FILE = '/nonexistent/aws-config';
  process.env.AWS_SHARED_CREDENTIALS_FILE = '/nonexistent/aws-credentials';
  delete process.env.AWS_PROFILE;
  delete process.env.AWS_ENDPOINT_URL_EC2;
  ec2 = new FakeEc2();
  await ec2.start();
  host1 = await ec2.addInstance(1, '172.31.1.10');
  host2 = await ec2.addInstance(2, '172.31.1.20');
  process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT = host1.imds.endpoint;
});

after(async () => {
  await ec2.stop();
});

beforeEach(async () => {
  for (const h of running.splice(0)) await h.stop();
  useKeys();
  ec2.tables.clear();
  ec2.addTable('rtb-0main', { main: true });
  ec2.addTable('rtb-0subnet', { subnetIds: ['subnet-0aaa1111'] });
  ec2.faults.clear();
  ec2.denied.clear();
  ec2.calls.length = 0;
  ec2.routeLimit = 50;
  ec2.roleName = null;
  for (const h of [host1, host2]) {
    h.instance.sourceDestCheck = true;
    h.instance.terminated = false;
    h.imds.allowV1 = true;
    h.imds.allowV2 = true;
  }
});

test('the walkthrough config, literally: a fresh route to our ENI in our subnet\'s table, source/dest check off', async () => {
  process.env.AWS_ENDPOINT_URL_EC2 = ec2.endpoint;
  process.env.AWS_EC2_METADATA_SERVICE_ENDPOINT = host1.imds.endpoint;
  process.env.FLANNEL_CLOUD_ALLOW_HTTP = '1';
  try {
    const h = await start(WALKTHROUGH);
    await h.synced();
    assert.deepEqual(ec2.routesOf('rtb-0subnet'), [
      { dest: '172.31.0.0/16', target: 'local', state: 'active' },
      { dest: '10.20.5.0/24', target: host1.instance.eniId, state: 'active' },
    ]);
    assert.equal(ec2.routesOf('rtb-0main').length, 1, 'the main table is left alone when our subnet has a table');
    assert.equal(host1.instance.sourceDestCheck, false);
    assert.deepEqual(host1.imds.paths.slice(0, 2), ['PUT /latest/api/token', 'GET /latest/meta-data/instance-id'], 'IMDSv2 token first');
    assert.equal(h.health.problem(), null);
    assert.ok(h.lines().some((l) => /created route .*dest=10\.20\.5\.0\/24/.test(l)));
  } finally {
    delete process.env.AWS_ENDPOINT_URL_EC2;
  }
});

test('no table of our subnet: the VPC main table; a list of RouteTableIDs: each of them', async () => {
  ec2.tables.get('rtb-0subnet')!.subnetIds = [];
  const h = await start();
  await h.synced();
  assert.ok(ec2.routesOf('rtb-0main').some((r) => r.dest === '10.20.5.0/24' && r.target === host1.instance.eniId));
  await h.stop();
  ec2.addTable('rtb-0extra');
  const h2 = await start(config({ RouteTableID: ['rtb-0extra', 'rtb-0subnet'] }), { subnet: '10.20.6.0/24', ifaceAddr: host1.instance.privateIp });
  await h2.synced();
  for (const t of ['rtb-0extra', 'rtb-0subnet']) assert.ok(ec2.routesOf(t).some((r) => r.dest === '10.20.6.0/24'), t);
});

test('a blackhole route for our CIDR is replaced, so is one to another instance; other routes are untouched', async () => {
  const table = ec2.tables.get('rtb-0subnet')!;
  table.routes.push({ dest: '10.20.5.0/24', eniId: 'eni-0deadbeef000000', origin: 'CreateRoute' }); // ENI of a terminated instance
  table.routes.push({ dest: '10.20.9.0/24', eniId: host2.instance.eniId, origin: 'CreateRoute' });
  const h = await start();
  await h.synced();
  assert.deepEqual(ec2.routesOf('rtb-0subnet').find((r) => r.dest === '10.20.5.0/24'), { dest: '10.20.5.0/24', target: host1.instance.eniId, state: 'active' });
  assert.ok(ec2.calls.some((c) => c.action === 'ReplaceRoute'));
  assert.ok(h.lines().some((l) => /replaced route .*was=blackhole/.test(l)));
  await h.stop();

  // Our CIDR pointing at host 2: replaced as well; host 2's own route stays.
  table.routes.find((r) => r.dest === '10.20.5.0/24')!.eniId = host2.instance.eniId;
  const h2 = await start();
  await h2.synced();
  const routes = ec2.routesOf('rtb-0subnet');
  assert.equal(routes.find((r) => r.dest === '10.20.5.0/24')!.target, host1.instance.eniId);
  assert.equal(routes.find((r) => r.dest === '10.20.9.0/24')!.target, host2.instance.eniId);
});

test('throttling, then success: retried with backoff, logged once', async () => {
  ec2.faults.add({ action: 'CreateRoute', code: 'RequestLimitExceeded', status: 503, times: 2, message: 'Request limit exceeded.' });
  const h = await start();
  await h.synced(15_000);
  assert.equal(ec2.calls.filter((c) => c.action === 'CreateRoute').length, 3);
  assert.ok(ec2.routesOf('rtb-0subnet').some((r) => r.dest === '10.20.5.0/24'));
  const failures = h.lines().filter((l) => /route sync failed/.test(l));
  assert.equal(failures.length, 1, failures.join('\n'));
  assert.match(failures[0]!, /RequestLimitExceeded/);
  assert.ok(h.lines().some((l) => /in place again/.test(l)));
});

test('a full table: a clear error, /healthz unhealthy, nothing else written; a warning when nearly full', async () => {
  const table = ec2.tables.get('rtb-0subnet')!;
  for (let i = 0; i < 49; i++) table.routes.push({ dest: `10.30.${i}.0/24`, eniId: host2.instance.eniId, origin: 'CreateRoute' });
  const h = await start();
  await waitFor(() => h.lines().some((l) => /route sync failed/.test(l)), 10_000, 'full-table error');
  assert.ok(h.lines().some((l) => /route table rtb-0subnet is full \(50 of 50 routes\)/.test(l)), h.lines().join('\n'));
  assert.match(h.health.problem() ?? '', /is full/);
  assert.equal(ec2.calls.filter((c) => c.action === 'CreateRoute').length, 0);
  await h.stop();

  // One free slot: the route goes in, with a warning that the table is nearly full.
  table.routes.pop();
  const h2 = await start();
  await h2.synced();
  assert.ok(h2.lines().some((l) => /nearly full .*routes=50 limit=50/.test(l)), h2.lines().join('\n'));

  // The API's own RouteLimitExceeded (a limit lower than we were told) reads the same way.
  await h2.stop();
  table.routes = table.routes.filter((r) => r.dest !== '10.20.5.0/24');
  ec2.routeLimit = 10;
  const h3 = await start();
  await waitFor(() => h3.lines().some((l) => /RouteLimitExceeded/.test(l)), 10_000, 'RouteLimitExceeded');
  assert.ok(h3.lines().some((l) => /route table is full/.test(l)));
});

test('credentials missing or wrong: one clear error, the daemon stops, no secret printed', async () => {
  delete process.env.AWS_ACCESS_KEY_ID;
  delete process.env.AWS_SECRET_ACCESS_KEY;
  const h = await start();
  await waitFor(() => h.fatal.length > 0, 15_000, 'fatal error');
  assert.match(h.fatal[0]!.message, /no AWS credentials/);

  process.env.AWS_ACCESS_KEY_ID = FAKE_AWS_KEY.accessKeyId;
  process.env.AWS_SECRET_ACCESS_KEY = 'not-the-right-secret-at-all-0000000000000';
  const h2 = await start();
  await waitFor(() => h2.fatal.length > 0, 10_000, 'fatal error');
  assert.match(h2.fatal[0]!.message, /EC2 refused our credentials \(SignatureDoesNotMatch\)/);
  process.env.AWS_ACCESS_KEY_ID = 'AKIAUNKNOWNKEY000000';
  const h3 = await start();
  await waitFor(() => h3.fatal.length > 0, 10_000, 'fatal error');
  assert.match(h3.fatal[0]!.message, /AuthFailure/);
  const all = [...h.lines(), ...h.fatal.map((e) => e.message), ...h2.fatal.map((e) => e.message)].join('\n');
  for (const secret of [FAKE_AWS_KEY.secretAccessKey, 'not-the-right-secret-at-all-0000000000000']) assert.ok(!all.includes(secret));
});

test('the instance role\'s credentials (no keys in the environment) are used, from the metadata service', async () => {
  delete process.env.AWS_ACCESS_KEY_ID;
  delete process.env.AWS_SECRET_ACCESS_KEY;
  ec2.roleName = 'demo-role';
  const h = await start();
  await h.synced();
  assert.ok(ec2.routesOf('rtb-0subnet').some((r) => r.dest === '10.20.5.0/24'));
  assert.ok(!h.lines().join('\n').includes(ec2.roleCredentials().secretAccessKey));
});

test('the metadata service down at start: a clear error, retried until it answers; IMDSv1 when v2 is refused', async () => {
  await host1.imds.close();
  const h = await start();
  await waitFor(() => h.lines().some((l) => /route sync failed/.test(l)), 10_000, 'metadata error');
  assert.ok(h.lines().some((l) => /EC2 instance metadata service at http:\/\/127\.0\.0\.1:\d+ is not answering/.test(l)), h.lines().join('\n'));
  assert.match(h.health.problem() ?? '', /metadata/);
  host1.imds.allowV2 = false;
  await host1.imds.listen();
  await h.synced(15_000);
  assert.ok(ec2.routesOf('rtb-0subnet').some((r) => r.dest === '10.20.5.0/24'));
  assert.ok(host1.imds.paths.includes('GET /latest/meta-data/instance-id'));
});

test('DescribeInstances denied: a clear error asking for RouteTableID; with RouteTableID the metadata names the ENI', async () => {
  ec2.denied.add('DescribeInstances');
  const h = await start();
  await waitFor(() => h.fatal.length > 0, 10_000, 'fatal error');
  assert.match(h.fatal[0]!.message, /ec2:DescribeInstances is denied.*set Backend\.RouteTableID/);
  const h2 = await start(config({ RouteTableID: 'rtb-0subnet' }));
  await h2.synced();
  assert.ok(ec2.routesOf('rtb-0subnet').some((r) => r.dest === '10.20.5.0/24' && r.target === host1.instance.eniId));
});

test('ModifyInstanceAttribute denied (the walkthrough policy does not grant it): a warning naming the permission, routes still made', async () => {
  ec2.denied.add('ModifyInstanceAttribute');
  const h = await start();
  await h.synced();
  assert.ok(h.lines().some((l) => /WARN .*ec2:ModifyInstanceAttribute is not granted.*Change source\/destination check/.test(l)), h.lines().join('\n'));
  assert.equal(host1.instance.sourceDestCheck, true);
  assert.equal(h.fatal.length, 0);
});

test('a lease removed: its route goes; a route for that CIDR someone else pointed elsewhere stays', async () => {
  const table = ec2.tables.get('rtb-0subnet')!;
  table.routes.push({ dest: '10.20.7.0/24', eniId: host2.instance.eniId, origin: 'CreateRoute' });
  table.routes.push({ dest: '10.20.8.0/24', eniId: host2.instance.eniId, origin: 'CreateRoute' });
  const h = await start();
  const l7 = makeLease('10.20.7.0/24', host2.instance.privateIp);
  const l8 = makeLease('10.20.8.0/24', host2.instance.privateIp);
  await h.backend.handleEvents([{ type: 'added', lease: l7 }, { type: 'added', lease: l8 }]);
  await h.synced();
  await waitFor(() => h.backend.sync.completedRounds >= 1, 5000);
  // Between our look and the removal, someone points 10.20.8.0/24 elsewhere: that route is not the lease's any more.
  table.routes.find((r) => r.dest === '10.20.8.0/24')!.eniId = host1.instance.eniId;
  const rounds = h.backend.sync.completedRounds;
  await h.backend.handleEvents([{ type: 'removed', lease: l7 }, { type: 'removed', lease: l8 }]);
  await waitFor(() => h.backend.sync.completedRounds > rounds, 5000);
  const dests = ec2.routesOf('rtb-0subnet').map((r) => r.dest);
  assert.ok(!dests.includes('10.20.7.0/24'), 'the removed lease\'s route is deleted');
  assert.ok(dests.includes('10.20.8.0/24'), 'a route that points elsewhere now is not ours to delete');
  assert.ok(dests.includes('172.31.0.0/16') && dests.includes('10.20.5.0/24'));
});

test('a departed lease\'s route stays unless it points at the ENI its own host\'s daemon writes (EC2 routes carry no mark)', async () => {
  const table = ec2.tables.get('rtb-0subnet')!;
  // 10.20.7.0/24: the departed host's own route (its ENI holds its PublicIP). 10.20.8.0/24: a route
  // an operator pointed at another instance, at the CIDR a lease claims with a PublicIP that is not that instance's.
  table.routes.push({ dest: '10.20.7.0/24', eniId: host2.instance.eniId, origin: 'CreateRoute' });
  table.routes.push({ dest: '10.20.8.0/24', eniId: host1.instance.eniId, origin: 'CreateRoute' });
  const h = await start();
  const l7 = makeLease('10.20.7.0/24', host2.instance.privateIp);
  const l8 = makeLease('10.20.8.0/24', '172.31.1.77');
  await h.backend.handleEvents([{ type: 'added', lease: l7 }, { type: 'added', lease: l8 }]);
  await h.synced();
  await waitFor(() => h.backend.sync.completedRounds >= 1, 5000);
  const rounds = h.backend.sync.completedRounds;
  await h.backend.handleEvents([{ type: 'removed', lease: l7 }, { type: 'removed', lease: l8 }]);
  await waitFor(() => h.backend.sync.completedRounds > rounds, 5000);
  const dests = ec2.routesOf('rtb-0subnet').map((r) => r.dest);
  assert.ok(!dests.includes('10.20.7.0/24'), 'the departed host\'s own route is deleted');
  assert.ok(dests.includes('10.20.8.0/24'), 'a route to an instance that is not the lease\'s host is never ours to delete');
});

test('a lease that goes before its route was seen: its route stays (nothing says a flannel daemon wrote it)', async () => {
  const table = ec2.tables.get('rtb-0subnet')!;
  const h = await start();
  await h.synced();
  const rounds = h.backend.sync.completedRounds;
  // Both hosts' routes appear only after our last look, and both leases go at once.
  table.routes.push({ dest: '10.20.7.0/24', eniId: 'eni-0terminated00000', origin: 'CreateRoute' });
  table.routes.push({ dest: '10.20.8.0/24', eniId: host2.instance.eniId, origin: 'CreateRoute' });
  const l7 = makeLease('10.20.7.0/24', '172.31.9.9');
  const l8 = makeLease('10.20.8.0/24', host2.instance.privateIp);
  await h.backend.handleEvents([{ type: 'added', lease: l7 }, { type: 'added', lease: l8 }, { type: 'removed', lease: l7 }, { type: 'removed', lease: l8 }]);
  await waitFor(() => h.backend.sync.completedRounds > rounds, 5000);
  const dests = ec2.routesOf('rtb-0subnet').map((r) => r.dest);
  assert.ok(dests.includes('10.20.7.0/24'), 'a blackhole route never seen as the lease\'s stays');
  assert.ok(dests.includes('10.20.8.0/24'), 'an active route never seen as the lease\'s stays');
});

test('a restart that finds its route in place makes no API writes', async () => {
  const h = await start();
  await h.synced();
  await h.stop();
  const from = ec2.calls.length;
  const h2 = await start();
  await h2.synced();
  assert.deepEqual(ec2.writesSince(from), []);
});

test('measured: a reconcile with 50 leases, and a burst of 50 lease events is one reconcile', async () => {
  ec2.routeLimit = 200;
  const table = ec2.tables.get('rtb-0subnet')!;
  const leases = Array.from({ length: 50 }, (_, i) => makeLease(`10.20.${100 + i}.0/24`, `172.31.2.${i + 1}`));
  // The other 50 hosts and their routes, as their own daemons made them (to the ENI holding each one's PublicIP).
  for (let i = 0; i < 50; i++) table.routes.push({ dest: `10.20.${100 + i}.0/24`, eniId: ec2.addInstanceRecord(100 + i, `172.31.2.${i + 1}`).eniId, origin: 'CreateRoute' });
  const h = await start(config({ RouteLimit: 200 }));
  await h.synced();
  const firstCalls = ec2.calls.length;
  const rounds = () => h.backend.sync.completedRounds;
  // A burst: 50 separate handleEvents calls, as watch events arrive one by one.
  const r0 = rounds();
  for (const l of leases) await h.backend.handleEvents([{ type: 'added', lease: l }]);
  await waitFor(() => rounds() > r0, 5000);
  await new Promise((r) => setTimeout(r, 400));
  const addCalls = ec2.calls.slice(firstCalls);
  const r1 = rounds();
  for (const l of leases) await h.backend.handleEvents([{ type: 'removed', lease: l }]);
  await waitFor(() => rounds() > r1, 10_000);
  await new Promise((r) => setTimeout(r, 400));
  const removeCalls = ec2.calls.slice(firstCalls + addCalls.length);
  console.log(`# aws-vpc: first start ${firstCalls} API calls (IMDS not counted); 50 lease additions: ${r1 - r0} reconcile, ${addCalls.length} API call; 50 removals: ${rounds() - r1} reconcile, ${removeCalls.length} API calls (${removeCalls.filter((c) => c.action === 'DeleteRoute').length} DeleteRoute)`);
  assert.equal(r1 - r0, 1, 'one reconcile for 50 additions');
  // One DescribeInstances finds the ENIs of all 50 new hosts (whose routes may be deleted when their leases go).
  assert.deepEqual(addCalls.map((c) => c.action), ['DescribeInstances', 'DescribeRouteTables'], 'a reconcile of 50 new leases is two API calls');
  assert.equal(rounds() - r1, 1, 'one reconcile for 50 removals');
  assert.equal(removeCalls.filter((c) => c.action === 'DescribeRouteTables').length, 1);
  assert.equal(removeCalls.filter((c) => c.action === 'DeleteRoute').length, 50);
  assert.deepEqual(ec2.routesOf('rtb-0subnet').map((r) => r.dest), ['172.31.0.0/16', '10.20.5.0/24']);
});
