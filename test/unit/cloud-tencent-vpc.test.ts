/**
 * tencent-vpc against a fake Tencent Cloud VPC API on loopback, through the
 * real SDK client (tencentcloud-sdk-nodejs's VPC client: TC3-HMAC-SHA256
 * signed POSTs; the fake verifies the signature) and a fake metadata service.
 */
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { FakeTencent, FAKE_TC_KEY, type FakeTcMetadata } from '../helpers/fake-cloud/tencent.js';
import { startCloudBackend, type CloudHarness } from '../helpers/cloud-backend.js';
import { routeDescription } from '../../src/backend/tencent-vpc/vpc-routes.js';
import { makeLease } from '../helpers/leases.js';
import { waitFor } from '../helpers/netns.js';

let tc: FakeTencent;
let md1: FakeTcMetadata;
const running: CloudHarness[] = [];
const IP1 = '172.16.1.10';
const IP2 = '172.16.1.20';

/** The config, and the host's endpoints in its environment (never in the shared config). */
function config(extra: Record<string, unknown> = {}): string {
  process.env.FLANNEL_CLOUD_ALLOW_HTTP = '1';
  process.env.TENCENTCLOUD_VPC_ENDPOINT = tc.endpoint;
  process.env.TENCENTCLOUD_METADATA_ENDPOINT = md1.endpoint;
  return JSON.stringify({ Network: '10.26.0.0/16', Backend: { Type: 'tencent-vpc', ...extra } });
}

async function start(cfg = config(), subnet = '10.26.5.0/24'): Promise<CloudHarness> {
  const h = await startCloudBackend(cfg, { subnet, ifaceAddr: IP1 });
  running.push(h);
  return h;
}

const ours = () => tc.userRoutes().find((r) => r.dest === '10.26.5.0/24');

before(async () => {
  tc = new FakeTencent();
  await tc.start();
  md1 = await tc.addInstance(IP1, '52:54:00:aa:bb:01');
  await tc.addInstance(IP2, '52:54:00:aa:bb:02');
});

after(() => tc.stop());

beforeEach(async () => {
  for (const h of running.splice(0)) await h.stop();
  process.env.ACCESS_KEY_ID = FAKE_TC_KEY.id;
  process.env.ACCESS_KEY_SECRET = FAKE_TC_KEY.secret;
  tc.reset();
  tc.faults.clear();
  tc.calls.length = 0;
  tc.routeLimit = 200;
});

test('a fresh route (NORMAL_CVM, our address) in the VPC\'s route table found through the metadata service; keys from ACCESS_KEY_ID/ACCESS_KEY_SECRET', async () => {
  const h = await start();
  await h.synced();
  assert.deepEqual(ours(), { dest: '10.26.5.0/24', gateway: IP1, enabled: true });
  const describe = tc.calls.find((c) => c.action === 'DescribeRouteTables')!;
  assert.deepEqual(describe.body.Filters, [{ Name: 'vpc-id', Values: [tc.vpcId] }]);
  const create = tc.calls.find((c) => c.action === 'CreateRoutes')!;
  assert.equal(create.body.RouteTableId, tc.tableId);
  assert.equal((create.body.Routes as { RouteDescription: string }[])[0]!.RouteDescription, routeDescription('10.26.5.0/24'));
  assert.deepEqual(md1.paths, ['/latest/meta-data/placement/region', '/latest/meta-data/mac', '/latest/meta-data/network/interfaces/macs/52:54:00:aa:bb:01/vpc-id']);
  assert.equal(h.health.problem(), null);
});

test('AccessKeyID/AccessKeySecret in the config win over the environment', async () => {
  process.env.ACCESS_KEY_SECRET = 'wrong';
  const h = await start(config({ AccessKeyID: FAKE_TC_KEY.id, AccessKeySecret: FAKE_TC_KEY.secret }));
  await h.synced();
  assert.ok(ours());
});

test('a stale route for our CIDR (to another instance, or disabled) is replaced; other routes stay', async () => {
  tc.addRoute('10.26.5.0/24', IP2);
  tc.addRoute('10.26.9.0/24', IP2);
  const h = await start();
  await h.synced();
  assert.deepEqual(ours(), { dest: '10.26.5.0/24', gateway: IP1, enabled: true });
  assert.deepEqual(tc.userRoutes().find((r) => r.dest === '10.26.9.0/24'), { dest: '10.26.9.0/24', gateway: IP2, enabled: true });
  assert.ok(h.lines().some((l) => new RegExp(`replaced route .*was=${IP2.replace(/\./g, '\\.')}`).test(l)), h.lines().join('\n'));
  await h.stop();
  tc.reset();
  tc.addRoute('10.26.5.0/24', IP1, { enabled: false });
  const h2 = await start();
  await h2.synced();
  assert.deepEqual(ours(), { dest: '10.26.5.0/24', gateway: IP1, enabled: true });
  assert.equal(tc.userRoutes().length, 1);
});

test('throttling, then success', async () => {
  tc.faults.add({ action: 'CreateRoutes', code: 'RequestLimitExceeded', status: 200, message: 'Your current request times equals to 20 in a second.' });
  tc.faults.add({ action: 'DescribeRouteTables', code: 'InternalError', status: 200 });
  const h = await start();
  await h.synced(15_000);
  assert.ok(ours());
  assert.equal(tc.calls.filter((c) => c.action === 'CreateRoutes').length, 2);
});

test('a full table: the API\'s LimitExceeded reported as blocked', async () => {
  tc.routeLimit = 0;
  const h = await start();
  await waitFor(() => h.lines().some((l) => /route sync failed/.test(l)), 10_000);
  assert.ok(h.lines().some((l) => /route table is full .*LimitExceeded/.test(l)), h.lines().join('\n'));
});

test('credentials missing or wrong: one clear error, no secret printed', async () => {
  delete process.env.ACCESS_KEY_ID;
  delete process.env.ACCESS_KEY_SECRET;
  await assert.rejects(start(), /no Tencent Cloud credentials: set Backend\.AccessKeyID and Backend\.AccessKeySecret, or ACCESS_KEY_ID and ACCESS_KEY_SECRET/);
  process.env.ACCESS_KEY_ID = FAKE_TC_KEY.id;
  process.env.ACCESS_KEY_SECRET = 'thisIsNotTheSecret000000000000000';
  const h = await start();
  await waitFor(() => h.fatal.length > 0, 10_000, 'fatal');
  assert.match(h.fatal[0]!.message, /Tencent Cloud refused our credentials \(AuthFailure\.SignatureFailure\)/);
  process.env.ACCESS_KEY_ID = 'AKIDunknown000000000000000000000000';
  const h2 = await start();
  await waitFor(() => h2.fatal.length > 0, 10_000, 'fatal');
  assert.match(h2.fatal[0]!.message, /AuthFailure\.SecretIdNotFound/);
  const text = [...h.lines(), ...h2.lines(), h.fatal[0]!.message, h2.fatal[0]!.message].join('\n');
  for (const s of ['thisIsNotTheSecret000000000000000', FAKE_TC_KEY.secret, 'Signature=']) assert.ok(!text.includes(s), s);
});

test('an endpoint in the shared config is refused; plain http only with the host\'s opt-in', async () => {
  await assert.rejects(start(config({ VPCEndpoint: 'http://198.18.0.1' })), /VPCEndpoint is a host setting.*TENCENTCLOUD_VPC_ENDPOINT/);
  const cfg = config();
  delete process.env.FLANNEL_CLOUD_ALLOW_HTTP;
  await assert.rejects(start(cfg), /TENCENTCLOUD_VPC_ENDPOINT is plain http/);
});

test('a lease removed: its route goes if a flannel-ts daemon wrote it for that host; others stay', async () => {
  tc.addRoute('10.26.7.0/24', IP2, { description: routeDescription('10.26.7.0/24') });
  tc.addRoute('10.26.8.0/24', IP2, { description: routeDescription('10.26.8.0/24') });
  tc.addRoute('10.26.9.0/24', IP2);
  const h = await start();
  const l7 = makeLease('10.26.7.0/24', IP2);
  const l8 = makeLease('10.26.8.0/24', IP2);
  const l9 = makeLease('10.26.9.0/24', IP2);
  await h.backend.handleEvents([{ type: 'added', lease: l7 }, { type: 'added', lease: l8 }, { type: 'added', lease: l9 }]);
  await h.synced();
  tc.routes.find((r) => r.DestinationCidrBlock === '10.26.8.0/24')!.GatewayId = IP1;
  const n = h.backend.sync.completedRounds;
  await h.backend.handleEvents([{ type: 'removed', lease: l7 }, { type: 'removed', lease: l8 }, { type: 'removed', lease: l9 }]);
  await waitFor(() => h.backend.sync.completedRounds > n, 10_000);
  const dests = tc.userRoutes().map((r) => r.dest);
  assert.ok(!dests.includes('10.26.7.0/24'));
  assert.ok(dests.includes('10.26.8.0/24'), 'pointed elsewhere since: not that lease\'s route any more');
  assert.ok(dests.includes('10.26.9.0/24'), 'a route without our description was not written by a flannel-ts daemon: never deleted');
  assert.ok(dests.includes('10.26.5.0/24'));
  assert.equal(tc.routes.filter((r) => r.RouteType === 'LOCAL').length, 1, 'the local route untouched');
});

test('a restart that finds its route in place makes no API writes', async () => {
  const h = await start();
  await h.synced();
  await h.stop();
  const from = tc.calls.length;
  const h2 = await start();
  await h2.synced();
  assert.deepEqual(tc.writesSince(from), []);
});
