/**
 * gce against a fake Compute Engine on loopback, through the real
 * @googleapis/compute client (REST JSON, global operations) and a fake
 * metadata server (Metadata-Flavor, service-account tokens).
 */
import { test, before, after, beforeEach } from 'node:test';
import assert from 'node:assert/strict';
import { FakeGce, type FakeGceMetadata } from '../helpers/fake-cloud/gce.js';
import { startCloudBackend, type CloudHarness } from '../helpers/cloud-backend.js';
import { makeLease } from '../helpers/leases.js';
import { waitFor } from '../helpers/netns.js';

let gce: FakeGce;
let md1: FakeGceMetadata;
const running: CloudHarness[] = [];

/** The config, and the host's endpoints in its environment (never in the shared config). */
function config(extra: Record<string, unknown> = {}): string {
  process.env.FLANNEL_CLOUD_ALLOW_HTTP = '1';
  process.env.FLANNEL_GCE_COMPUTE_ENDPOINT = gce.endpoint;
  process.env.GCE_METADATA_HOST = md1.endpoint;
  return JSON.stringify({ Network: '10.20.0.0/16', Backend: { Type: 'gce', ...extra } });
}

async function start(cfg = config(), subnet = '10.20.5.0/24'): Promise<CloudHarness> {
  const h = await startCloudBackend(cfg, { subnet, ifaceAddr: '10.128.0.2' });
  running.push(h);
  return h;
}

const ours = () => gce.routes.get('flannel-10-20-5-0-24');

before(async () => {
  delete process.env.GOOGLE_APPLICATION_CREDENTIALS;
  gce = new FakeGce();
  await gce.start();
  md1 = await gce.addInstance('host-1', '10.128.0.2');
  await gce.addInstance('host-2', '10.128.0.3');
});

after(() => gce.stop());

beforeEach(async () => {
  for (const h of running.splice(0)) await h.stop();
  gce.routes.clear();
  gce.addDefaultRoute();
  gce.faults.clear();
  gce.calls.length = 0;
  gce.routeQuota = 100;
  gce.reportedQuota = null;
  gce.rejectTokens = false;
  gce.instances.get('host-1')!.noServiceAccount = false;
});

test('a fresh route flannel-<subnet> to our instance in our network, written through a global operation', async () => {
  const h = await start();
  await h.synced();
  const r = ours();
  assert.ok(r, JSON.stringify(gce.routeList()));
  assert.equal(r.destRange, '10.20.5.0/24');
  assert.equal(r.nextHopInstance, gce.instanceLink('host-1'));
  assert.equal(r.network, gce.networkLink());
  assert.equal(r.priority, 1000);
  assert.ok(gce.calls.some((c) => c.method === 'POST' && c.path.endsWith('/wait')), 'the insert operation was waited for');
  assert.ok(md1.paths.includes('/computeMetadata/v1/instance/service-accounts/default/token'));
  assert.equal(h.health.problem(), null);
});

test('a stale route (another next hop) or one whose instance is gone is replaced; others are untouched', async () => {
  const base = { destRange: '10.20.5.0/24', network: gce.networkLink(), priority: 1000 };
  gce.routes.set('flannel-10-20-5-0-24', { name: 'flannel-10-20-5-0-24', ...base, nextHopInstance: gce.instanceLink('host-2') });
  gce.routes.set('flannel-10-20-9-0-24', { name: 'flannel-10-20-9-0-24', ...base, destRange: '10.20.9.0/24', nextHopInstance: gce.instanceLink('host-2') });
  const h = await start();
  await h.synced();
  assert.equal(ours()!.nextHopInstance, gce.instanceLink('host-1'));
  assert.equal(gce.routes.get('flannel-10-20-9-0-24')!.nextHopInstance, gce.instanceLink('host-2'));
  assert.ok(h.lines().some((l) => /replaced route .*was=projects\/flannel-test-project\/zones\/us-central1-a\/instances\/host-2/.test(l)), h.lines().join('\n'));
  await h.stop();

  ours()!.nextHopInstance = gce.instanceLink('host-1').replace('host-1', 'deleted-host');
  const h2 = await start();
  await h2.synced();
  assert.equal(ours()!.nextHopInstance, gce.instanceLink('host-1'));
  assert.ok(h2.lines().some((l) => /replaced route .*was=blackhole/.test(l)));
});

test('rate limited (403 rateLimitExceeded, then 429), then success', async () => {
  gce.faults.add({ action: 'POST /global/*', code: 'rateLimitExceeded', status: 403, message: 'Rate Limit Exceeded' });
  gce.faults.add({ action: 'GET /global/*', code: 'rateLimitExceeded', status: 429, message: 'Quota exceeded for quota metric Read requests' });
  const h = await start();
  await h.synced(15_000);
  assert.ok(ours());
  assert.equal(h.lines().filter((l) => /route sync failed/.test(l)).length, 2, h.lines().join('\n'));
});

test('the project route quota: a clear error when it is used up, before and by the API', async () => {
  gce.routeQuota = 1; // the default internet route uses it
  const h = await start();
  await waitFor(() => h.lines().some((l) => /route sync failed/.test(l)), 10_000);
  assert.ok(h.lines().some((l) => /route table flannel-test-project is full \(1 of 1 routes\)/.test(l)), h.lines().join('\n'));
  assert.equal(ours(), undefined);
  assert.match(h.health.problem() ?? '', /full/);
  await h.stop();
  // The quota read at start says there is room, the insert finds none: the operation's QUOTA_EXCEEDED is reported as such.
  gce.reportedQuota = 100;
  const h2 = await start();
  await waitFor(() => h2.lines().some((l) => /route sync failed/.test(l)), 10_000);
  assert.ok(h2.lines().some((l) => /the project's route quota is used up .*QUOTA_EXCEEDED/.test(l)), h2.lines().join('\n'));
  assert.equal(ours(), undefined);
});

test('credentials missing (no service account) or refused: one clear error, the daemon stops, no token printed', async () => {
  gce.instances.get('host-1')!.noServiceAccount = true;
  const h = await start();
  await waitFor(() => h.fatal.length > 0, 10_000, 'fatal');
  assert.match(h.fatal[0]!.message, /no service account.*compute-rw/);
  gce.instances.get('host-1')!.noServiceAccount = false;
  gce.rejectTokens = true;
  const h2 = await start();
  await waitFor(() => h2.fatal.length > 0, 10_000, 'fatal');
  assert.match(h2.fatal[0]!.message, /refused our credentials \(networks\.get failed: HTTP 401/);
  const text = [...h.lines(), ...h2.lines(), h2.fatal[0]!.message].join('\n');
  assert.ok(!/ya29\./.test(text), 'no access token in the log');
});

test('the metadata server down at start: a clear error, retried until it answers', async () => {
  await md1.close();
  const h = await start();
  await waitFor(() => h.lines().some((l) => /route sync failed/.test(l)), 10_000);
  assert.ok(h.lines().some((l) => /GCE metadata server at http:\/\/127\.0\.0\.1:\d+ is not answering/.test(l)), h.lines().join('\n'));
  await md1.listen();
  await h.synced(15_000);
  assert.ok(ours());
});

test('a lease removed: its flannel route goes; a route of another name for that range stays', async () => {
  const base = { network: gce.networkLink(), priority: 1000, nextHopInstance: gce.instanceLink('host-2') };
  gce.routes.set('flannel-10-20-7-0-24', { name: 'flannel-10-20-7-0-24', destRange: '10.20.7.0/24', ...base });
  gce.routes.set('someones-route', { name: 'someones-route', destRange: '10.20.8.0/24', ...base });
  const h = await start();
  const l7 = makeLease('10.20.7.0/24', '10.128.0.3');
  const l8 = makeLease('10.20.8.0/24', '10.128.0.3');
  await h.backend.handleEvents([{ type: 'added', lease: l7 }, { type: 'added', lease: l8 }]);
  await waitFor(() => h.backend.sync.completedRounds >= 2 || (h.backend.sync.synced && h.backend.sync.completedRounds >= 1), 10_000);
  await new Promise((r) => setTimeout(r, 300));
  const n = h.backend.sync.completedRounds;
  await h.backend.handleEvents([{ type: 'removed', lease: l7 }, { type: 'removed', lease: l8 }]);
  await waitFor(() => h.backend.sync.completedRounds > n, 10_000);
  assert.equal(gce.routes.has('flannel-10-20-7-0-24'), false);
  assert.equal(gce.routes.has('someones-route'), true);
  assert.ok(ours());
});

test('a restart that finds its route in place makes no API writes', async () => {
  const h = await start();
  await h.synced();
  await h.stop();
  const from = gce.calls.length;
  const h2 = await start();
  await h2.synced();
  assert.deepEqual(gce.writesSince(from), []);
});
