/**
 * ali-vpc against a fake Aliyun VPC API on loopback, through the real
 * @alicloud/pop-core client (signed RPC queries; the fake verifies the
 * signature) and a fake metadata service.
 */
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { FakeAliyun, FAKE_ALI_KEY, type FakeAliMetadata } from '../helpers/fake-cloud/aliyun.js';
import { startCloudBackend, type CloudHarness } from '../helpers/cloud-backend.js';
import { entryName } from '../../src/backend/ali-vpc/vpc-routes.js';
import { makeLease } from '../helpers/leases.js';
import { waitFor } from '../helpers/netns.js';

let ali: FakeAliyun;
let md1: FakeAliMetadata;
const running: CloudHarness[] = [];
const I1 = 'i-bp1fakeflannel00001';
const I2 = 'i-bp1fakeflannel00002';

/** The config, and the host's endpoints in its environment (never in the shared config). */
function config(extra: Record<string, unknown> = {}): string {
  process.env.FLANNEL_CLOUD_ALLOW_HTTP = '1';
  process.env.ALICLOUD_VPC_ENDPOINT = ali.endpoint;
  process.env.ALICLOUD_METADATA_ENDPOINT = md1.endpoint;
  return JSON.stringify({ Network: '10.24.0.0/16', Backend: { Type: 'ali-vpc', ...extra } });
}

async function start(cfg = config(), subnet = '10.24.5.0/24'): Promise<CloudHarness> {
  const h = await startCloudBackend(cfg, { subnet, ifaceAddr: '192.168.1.10' });
  running.push(h);
  return h;
}

const ours = () => ali.customEntries().find((e) => e.dest === '10.24.5.0/24');

before(async () => {
  ali = new FakeAliyun();
  await ali.start();
  md1 = await ali.addInstance(I1, '192.168.1.10');
  await ali.addInstance(I2, '192.168.1.20');
});

after(() => ali.stop());

beforeEach(async () => {
  for (const h of running.splice(0)) await h.stop();
  process.env.ACCESS_KEY_ID = FAKE_ALI_KEY.id;
  process.env.ACCESS_KEY_SECRET = FAKE_ALI_KEY.secret;
  ali.reset();
  ali.faults.clear();
  ali.calls.length = 0;
  ali.entryLimit = 50;
});

test('a fresh entry (next hop type Instance) for our subnet, waited for until Available; keys from ACCESS_KEY_ID/ACCESS_KEY_SECRET', async () => {
  const h = await start();
  await h.synced();
  assert.deepEqual(ours(), { dest: '10.24.5.0/24', nextHop: I1, status: 'Available' });
  const create = ali.calls.find((c) => c.action === 'CreateRouteEntry')!;
  assert.equal(create.params.NextHopType, 'Instance');
  assert.equal(create.params.RouteTableId, ali.tableId);
  const after = ali.calls.slice(ali.calls.indexOf(create) + 1).map((c) => c.action);
  assert.ok(after.includes('DescribeRouteEntryList'), 'the entry was polled until Available');
  assert.equal(h.health.problem(), null);
});

test('AccessKeyID/AccessKeySecret in the config win over the environment', async () => {
  process.env.ACCESS_KEY_SECRET = 'wrong';
  const h = await start(config({ AccessKeyID: FAKE_ALI_KEY.id, AccessKeySecret: FAKE_ALI_KEY.secret }));
  await h.synced();
  assert.ok(ours());
});

test('an entry for our CIDR to another instance is replaced; other entries stay', async () => {
  ali.addEntry('10.24.5.0/24', I2);
  ali.addEntry('10.24.9.0/24', I2);
  const h = await start();
  await h.synced();
  assert.deepEqual(ours(), { dest: '10.24.5.0/24', nextHop: I1, status: 'Available' });
  assert.deepEqual(ali.customEntries().find((e) => e.dest === '10.24.9.0/24'), { dest: '10.24.9.0/24', nextHop: I2, status: 'Available' });
  assert.ok(h.lines().some((l) => new RegExp(`replaced route .*was=${I2}`).test(l)));
});

test('throttling and a busy table, then success', async () => {
  ali.faults.add({ action: 'CreateRouteEntry', code: 'Throttling.User', status: 400, message: 'Request was denied due to user flow control.' });
  ali.faults.add({ action: 'CreateRouteEntry', code: 'IncorrectRouteEntryStatus', status: 400 });
  const h = await start();
  await h.synced(15_000);
  assert.ok(ours());
  assert.equal(ali.calls.filter((c) => c.action === 'CreateRouteEntry').length, 3);
});

test('a full table: a clear error before writing; the API\'s QuotaExceeded reads the same way', async () => {
  for (let i = 0; i < 50; i++) ali.addEntry(`10.30.${i}.0/24`, I2);
  const h = await start();
  await waitFor(() => h.lines().some((l) => /route sync failed/.test(l)), 10_000);
  assert.ok(h.lines().some((l) => /is full \(50 of 50 routes\)/.test(l)), h.lines().join('\n'));
  assert.equal(ali.calls.filter((c) => c.action === 'CreateRouteEntry').length, 0);
  await h.stop();
  ali.entryLimit = 10;
  const h2 = await start(config({ RouteLimit: 100 }));
  await waitFor(() => h2.lines().some((l) => /route sync failed/.test(l)), 10_000);
  assert.ok(h2.lines().some((l) => /route table is full .*QuotaExceeded\.RouteEntry/.test(l)), h2.lines().join('\n'));
});

test('credentials missing or wrong: one clear error, no secret printed', async () => {
  delete process.env.ACCESS_KEY_ID;
  delete process.env.ACCESS_KEY_SECRET;
  await assert.rejects(start(), /no Aliyun credentials: set Backend\.AccessKeyID and Backend\.AccessKeySecret, or ACCESS_KEY_ID and ACCESS_KEY_SECRET/);
  process.env.ACCESS_KEY_ID = FAKE_ALI_KEY.id;
  process.env.ACCESS_KEY_SECRET = 'thisIsNotTheSecret000000000000000';
  const h = await start();
  await waitFor(() => h.fatal.length > 0, 10_000, 'fatal');
  assert.match(h.fatal[0]!.message, /Aliyun refused our credentials \(SignatureDoesNotMatch\)/);
  process.env.ACCESS_KEY_ID = 'LTAIunknownKeyId000000';
  const h2 = await start();
  await waitFor(() => h2.fatal.length > 0, 10_000, 'fatal');
  assert.match(h2.fatal[0]!.message, /InvalidAccessKeyId\.NotFound/);
  const text = [...h.lines(), ...h2.lines(), h.fatal[0]!.message, h2.fatal[0]!.message].join('\n');
  for (const s of ['thisIsNotTheSecret000000000000000', FAKE_ALI_KEY.secret, 'Signature=']) assert.ok(!text.includes(s), s);
});

test('the metadata service down at start: a clear error, retried until it answers', async () => {
  await md1.close();
  const h = await start();
  await waitFor(() => h.lines().some((l) => /route sync failed/.test(l)), 10_000);
  assert.ok(h.lines().some((l) => /Aliyun metadata service at http:\/\/127\.0\.0\.1:\d+ is not answering/.test(l)), h.lines().join('\n'));
  await md1.listen();
  await h.synced(15_000);
  assert.ok(ours());
});

test('a lease removed: its entry goes; an entry for that CIDR pointed elsewhere since stays, so does one no flannel daemon named', async () => {
  ali.addEntry('10.24.7.0/24', I2, entryName('10.24.7.0/24'));
  ali.addEntry('10.24.8.0/24', I2, entryName('10.24.8.0/24'));
  ali.addEntry('10.24.9.0/24', I2);
  const h = await start();
  const l7 = makeLease('10.24.7.0/24', '192.168.1.20');
  const l8 = makeLease('10.24.8.0/24', '192.168.1.20');
  const l9 = makeLease('10.24.9.0/24', '192.168.1.20');
  await h.backend.handleEvents([{ type: 'added', lease: l7 }, { type: 'added', lease: l8 }, { type: 'added', lease: l9 }]);
  await h.synced();
  await new Promise((r) => setTimeout(r, 400));
  ali.entries.find((e) => e.dest === '10.24.8.0/24')!.nextHopId = I1;
  const n = h.backend.sync.completedRounds;
  await h.backend.handleEvents([{ type: 'removed', lease: l7 }, { type: 'removed', lease: l8 }, { type: 'removed', lease: l9 }]);
  await waitFor(() => h.backend.sync.completedRounds > n, 10_000);
  const dests = ali.customEntries().map((e) => e.dest);
  assert.ok(!dests.includes('10.24.7.0/24'));
  assert.ok(dests.includes('10.24.8.0/24'));
  assert.ok(dests.includes('10.24.9.0/24'), 'an entry without our name was not written by a flannel daemon: never deleted');
  assert.ok(dests.includes('10.24.5.0/24'));
  assert.equal(ali.entries.filter((e) => e.type === 'System').length, 2, 'system entries untouched');
});

test('a restart that finds its entry in place makes no API writes', async () => {
  const h = await start();
  await h.synced();
  await h.stop();
  const from = ali.calls.length;
  const h2 = await start();
  await h2.synced();
  assert.deepEqual(ali.writesSince(from), []);
});
