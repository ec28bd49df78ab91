import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createUdpBackend, createUdpBackendWith, parseUdpBackendConfig } from '../../src/backend/udp/index.js';
import type { NativeAddon } from '../../src/native/addon.js';
import { IpRoute } from '../../src/net/iproute.js';
import { setLogSink } from '../../src/log.js';
import { makeLease } from '../helpers/leases.js';
import { backendContext } from '../helpers/backend-context.js';

setLogSink(() => {});

function ctx(backend: Record<string, unknown> = { Type: 'udp' }) {
  const metrics = new Map<string, () => string>();
  const c = backendContext({ Network: '10.5.0.0/16', Backend: backend }, { metrics: { register: (name, render) => metrics.set(name, render) } });
  return { c, metrics };
}

const lease = makeLease;

const closed: number[] = [];
const fakeAddon = {
  tunOpen: (name: string) => ({ fd: 100, name }),
  udpOpen: () => 101,
  close: (fd: number) => void closed.push(fd),
} as unknown as NativeAddon;

test('Port option: default 8285, case-insensitive, validated', () => {
  assert.equal(parseUdpBackendConfig({ Type: 'udp' }).port, 8285);
  assert.equal(parseUdpBackendConfig({ Type: 'udp', port: 9000 }).port, 9000);
  assert.throws(() => parseUdpBackendConfig({ Port: 70000 }), /Port must be an integer in 1\.\.65535/);
  assert.throws(() => parseUdpBackendConfig({ Port: '8285' }), /Port/);
});

test('publishes no backend attributes and an MTU 28 bytes under the link', async () => {
  const b = await createUdpBackend(ctx().c);
  assert.equal(b.type, 'udp');
  assert.deepEqual(await b.prepare(null), {});
  assert.equal(b.mtu(), 1472);
});

test('start programs flannel0 as flannel does and replaces a stale subnet address', async () => {
  const { c, metrics } = ctx({ Type: 'udp', Port: 8300 });
  const ip = new IpRoute({
    mode: 'plan',
    planOutputs: { '-4 -o addr show dev flannel0': '5: flannel0    inet 10.5.7.0/32 scope global flannel0\\       valid_lft forever preferred_lft forever\n' },
  });
  const b = createUdpBackendWith(c, { ip, addon: fakeAddon, dataplane: false });
  await b.start(lease('10.5.81.0/24', '192.0.2.1'));
  assert.deepEqual(ip.lines(), [
    'ip -4 -o addr show dev flannel0',
    'ip addr del 10.5.7.0/32 dev flannel0',
    'ip addr add 10.5.81.0/32 dev flannel0',
    'ip link set dev flannel0 mtu 1472 txqueuelen 2000 up',
    'ip route replace 10.5.0.0/16 dev flannel0',
  ]);
  assert.match(metrics.get('udp')!(), /flannel_udp_sent_packets_total 0/);
  await b.stop();
  assert.deepEqual(closed.splice(0), [100, 101]);
});

test('lease events add, change and remove routes; our own lease is ignored', async () => {
  const { c } = ctx();
  const b = createUdpBackendWith(c, { ip: new IpRoute({ mode: 'plan' }), addon: fakeAddon, dataplane: false });
  await b.start(lease('10.5.81.0/24', '192.0.2.1'));
  await b.handleEvents([
    { type: 'added', lease: lease('10.5.52.0/24', '192.0.2.2') },
    { type: 'added', lease: lease('10.5.81.0/24', '192.0.2.1') },
    { type: 'added', lease: lease('10.5.53.0/24', 'not-an-ip') },
    { type: 'added', lease: lease('10.5.60.0/24', '192.0.2.3') },
  ]);
  assert.deepEqual(b.routeList(), [
    { subnet: '10.5.52.0/24', publicIP: '192.0.2.2', port: 8285 },
    { subnet: '10.5.60.0/24', publicIP: '192.0.2.3', port: 8285 },
  ]);
  await b.handleEvents([
    { type: 'added', lease: lease('10.5.52.0/24', '192.0.2.9') },
    { type: 'removed', lease: lease('10.5.60.0/24', '192.0.2.3') },
  ]);
  assert.deepEqual(b.routeList(), [{ subnet: '10.5.52.0/24', publicIP: '192.0.2.9', port: 8285 }]);
  await b.stop();
  closed.length = 0;
});

test('ip runner errors name the command and ip\'s message', async () => {
  const ip = new IpRoute({ binary: '/nonexistent/ip' });
  await assert.rejects(ip.run(['link', 'show']), /"ip link show" failed: .*not found: install iproute2/);
  const sh = new IpRoute({ binary: 'sh' });
  await assert.rejects(sh.run(['-c', 'echo "RTNETLINK answers: File exists" >&2; exit 2']), (e: Error & { exists?: boolean }) => {
    assert.match(e.message, /exit 2\): RTNETLINK answers: File exists/);
    assert.equal(e.exists, true);
    return true;
  });
  assert.equal(await sh.runIgnoringMissing(['-c', 'echo "Cannot find device \\"x\\"" >&2; exit 1']), '');
});

test('Workers option: ours, 1..8, absent or 0 leaves the daemon default', () => {
  assert.equal(parseUdpBackendConfig({ Type: 'udp' }).workers, undefined);
  assert.equal(parseUdpBackendConfig({ Type: 'udp', Workers: 0 }).workers, undefined);
  assert.equal(parseUdpBackendConfig({ Type: 'udp', workers: 3 }).workers, 3);
  assert.throws(() => parseUdpBackendConfig({ Workers: 9 }), /Workers must be an integer in 1\.\.8/);
  assert.throws(() => parseUdpBackendConfig({ Workers: '2' }), /Workers/);
  // The wireguard userspace path always runs one pair; the udp backend follows the option, then the daemon's default.
  assert.equal(createUdpBackendWith(ctx({ Type: 'udp', Workers: 2 }).c, { addon: fakeAddon, dataplane: false }).workerCount, 2);
  const c = ctx().c;
  assert.equal(createUdpBackendWith({ ...c, dataplane: { ...c.dataplane, workers: 5 } }, { addon: fakeAddon, dataplane: false }).workerCount, 5);
});
