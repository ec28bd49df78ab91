import { test } from 'node:test';
import assert from 'node:assert/strict';
import { RouteNetwork } from '../../src/backend/route-network.js';
import { createLogger, setLogSink } from '../../src/log.js';
import { formatIP4Net } from '../../src/net/ipaddr.js';
import type { Lease, LeaseEvent } from '../../src/subnet/types.js';
import { makeLease } from '../helpers/leases.js';

const lines: string[] = [];
setLogSink((l) => lines.push(l));

const hostGw = (subnet: string, publicIP: string, backendType = 'host-gw'): Lease => {
  const l = makeLease(subnet, publicIP);
  l.attrs.backendType = backendType;
  return l;
};
const added = (lease: Lease): LeaseEvent => ({ type: 'added', lease });
const removed = (lease: Lease): LeaseEvent => ({ type: 'removed', lease });

function network(recheckMs = 0) {
  const applied: string[][] = [];
  const rn = new RouteNetwork<{ dst: string; via: string }>({
    backendType: 'host-gw',
    // A peer outside 192.0.2.0/24 is not on our link: no route can work.
    routeFor: (l) => (l.attrs.publicIP.startsWith('192.0.2.') ? { dst: formatIP4Net(l.subnet!), via: l.attrs.publicIP } : null),
    apply: async (routes) => void applied.push([...routes.values()].map((r) => `${r.dst} via ${r.via}`).sort()),
    log: createLogger('test'),
    recheckMs,
  });
  return { rn, applied };
}

test('one route per lease of our backend type, one apply per changed batch', async () => {
  const { rn, applied } = network();
  const a = hostGw('10.5.1.0/24', '192.0.2.2');
  const b = hostGw('10.5.2.0/24', '192.0.2.3');
  await rn.handleEvents([added(a), added(b)]);
  assert.deepEqual(applied, [['10.5.1.0/24 via 192.0.2.2', '10.5.2.0/24 via 192.0.2.3']]);
  // A renewal (same route) changes nothing and applies nothing.
  await rn.handleEvents([added(a)]);
  assert.equal(applied.length, 1);
  // A PublicIP change replaces the route; a removal drops it.
  await rn.handleEvents([added(hostGw('10.5.1.0/24', '192.0.2.9')), removed(b)]);
  assert.deepEqual(applied.at(-1), ['10.5.1.0/24 via 192.0.2.9']);
});

test('leases of another backend type get no route and one log line each', async () => {
  const { rn, applied } = network();
  lines.length = 0;
  const v = hostGw('10.5.3.0/24', '192.0.2.4', 'vxlan');
  await rn.handleEvents([added(v)]);
  await rn.handleEvents([added(v)]);
  assert.equal(applied.length, 0);
  assert.equal(lines.filter((l) => /ignoring lease of another backend type/.test(l) && /10\.5\.3\.0\/24/.test(l)).length, 1);
  // Switching to our type gets it a route; switching away removes it again.
  await rn.handleEvents([added(hostGw('10.5.3.0/24', '192.0.2.4'))]);
  assert.deepEqual(applied.at(-1), ['10.5.3.0/24 via 192.0.2.4']);
  await rn.handleEvents([added(v)]);
  assert.deepEqual(applied.at(-1), []);
});

test('a lease no route can serve is skipped; the rest still apply', async () => {
  const { rn, applied } = network();
  await rn.handleEvents([added(hostGw('10.5.4.0/24', '198.18.0.5')), added(hostGw('10.5.5.0/24', '192.0.2.5'))]);
  assert.deepEqual(applied, [['10.5.5.0/24 via 192.0.2.5']]);
  assert.deepEqual([...rn.desired().keys()], ['subnets/10.5.5.0-24']);
});

test('the whole set is applied again periodically, and a failing apply is logged, not thrown', async () => {
  let calls = 0;
  let fail = true;
  lines.length = 0;
  const rn = new RouteNetwork<string>({
    backendType: 'host-gw',
    routeFor: (l) => l.attrs.publicIP,
    apply: async () => {
      calls++;
      if (fail) throw new Error('RTNETLINK answers: Network is unreachable');
    },
    log: createLogger('test'),
    recheckMs: 20,
  });
  await rn.handleEvents([added(hostGw('10.5.6.0/24', '192.0.2.6'))]);
  assert.equal(calls, 1);
  assert.ok(lines.some((l) => /cannot apply routes/.test(l) && /Network is unreachable/.test(l)));
  fail = false;
  rn.start();
  await new Promise((r) => setTimeout(r, 90));
  rn.stop();
  const after = calls;
  assert.ok(after >= 3, `re-applied periodically (${after} calls)`);
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(calls, after, 'stop() ends the re-checks');
});
