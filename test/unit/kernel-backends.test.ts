import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IpipBackend } from '../../src/backend/ipip/index.js';
import { parseVxlanOptions } from '../../src/backend/vxlan/options.js';
import type { BackendContext } from '../../src/backend/types.js';
import { IpRoute } from '../../src/net/iproute.js';
import { KernelStateApplier } from '../../src/net/kernel-state.js';
import { createLogger, setLogSink } from '../../src/log.js';
import { parseIP4Net } from '../../src/net/ipaddr.js';
import { makeLease } from '../helpers/leases.js';
import { backendContext } from '../helpers/backend-context.js';

const lines: string[] = [];
setLogSink((l) => lines.push(l));

const ctx = (backend: Record<string, unknown>): BackendContext => backendContext({ Network: '10.5.0.0/16', Backend: backend });

const typed = (subnet: string, ip: string, backendType: string) => {
  const l = makeLease(subnet, ip);
  l.attrs.backendType = backendType;
  return l;
};

test('ipip as a recorded plan (this kernel has no ipip): device, address, MTU link - 20, onlink routes, DirectRouting', async () => {
  const ip = new IpRoute({ mode: 'plan' });
  // Reads: no device yet, our link is 192.0.2.0/24, no routes of ours yet.
  const readIp = new IpRoute({ mode: 'plan', planOutputs: { '-4 -json addr show dev eth0': '[{"addr_info":[{"local":"192.0.2.1","prefixlen":24}]}]' } });
  const b = new IpipBackend(ctx({ Type: 'ipip', DirectRouting: true }), { ip, readIp, recheckMs: 0 });
  assert.deepEqual(await b.prepare(), { backendType: 'ipip' });
  assert.equal(b.mtu(), 1480);
  await b.start(makeLease('10.5.1.0/24', '192.0.2.1'));
  await b.handleEvents([
    { type: 'added', lease: typed('10.5.2.0/24', '198.18.0.2', 'ipip') },
    { type: 'added', lease: typed('10.5.3.0/24', '192.0.2.3', 'ipip') }, // on our link: direct
    { type: 'added', lease: typed('10.5.4.0/24', '198.18.0.4', 'vxlan') }, // another backend: skipped
  ]);
  assert.deepEqual(ip.lines(), [
    'ip link add flannel.ipip type ipip local 192.0.2.1',
    'ip addr flush dev flannel.ipip',
    'ip addr add 10.5.1.0/32 dev flannel.ipip',
    'ip link set dev flannel.ipip mtu 1480 up',
    'ip route replace 10.5.2.0/24 via 198.18.0.2 dev flannel.ipip onlink',
    'ip route replace 10.5.3.0/24 via 192.0.2.3 dev eth0',
  ]);
  assert.ok(lines.some((l) => /ignoring lease of another backend type/.test(l) && /10\.5\.4\.0\/24/.test(l)));
  await b.stop();
});

test('the applier changes only what differs and removes only what it owns', async () => {
  const readIp = new IpRoute({
    mode: 'plan',
    planOutputs: {
      '-4 -json route show table main': JSON.stringify([
        { dst: '10.5.2.0/24', gateway: '10.5.2.0', dev: 'flannel.1', flags: ['onlink'] }, // right: kept
        { dst: '10.5.3.0/24', gateway: '10.5.3.0', dev: 'flannel.1', flags: ['onlink'] }, // stale: removed
        { dst: '10.5.0.0/16', dev: 'flannel.1' }, // the whole Network: not per-peer state, not ours
        { dst: '192.0.2.0/24', dev: 'eth0' }, // the link's own route: never touched
        { dst: '10.6.1.0/24', gateway: '192.0.2.9', dev: 'eth0' }, // outside Network: never touched
      ]),
      '-4 -json neigh show dev flannel.1 nud permanent': JSON.stringify([{ dst: '10.5.2.0', lladdr: 'AA:BB:CC:00:00:02' }, { dst: '10.5.3.0', lladdr: 'aa:bb:cc:00:00:03' }]),
    },
  });
  const readBridge = new IpRoute({ mode: 'plan', binary: 'bridge', planOutputs: { '-json fdb show dev flannel.1': JSON.stringify([{ mac: 'aa:bb:cc:00:00:02', dst: '192.0.2.2' }, { mac: 'aa:bb:cc:00:00:03', dst: '192.0.2.3' }, { mac: '0a:0b:0c:0d:0e:0f' }]) } });
  const transcript: string[] = [];
  const a = new KernelStateApplier({
    scope: { network: parseIP4Net('10.5.0.0/16'), routeDevs: ['flannel.1', 'eth0'], ownedDevs: ['flannel.1'] },
    readIp,
    readBridge,
    writeIp: new IpRoute({ mode: 'plan', transcript }),
    writeBridge: new IpRoute({ mode: 'plan', binary: 'bridge', transcript }),
    log: createLogger('test'),
  });
  const r = await a.apply({
    routes: [
      { dst: '10.5.2.0/24', via: '10.5.2.0', dev: 'flannel.1', onlink: true },
      { dst: '10.5.4.0/24', via: '10.5.4.0', dev: 'flannel.1', onlink: true },
    ],
    neighs: [
      { dev: 'flannel.1', ip: '10.5.2.0', mac: 'aa:bb:cc:00:00:02' },
      { dev: 'flannel.1', ip: '10.5.4.0', mac: 'aa:bb:cc:00:00:04' },
    ],
    fdb: [
      { dev: 'flannel.1', mac: 'aa:bb:cc:00:00:02', dst: '192.0.2.2' },
      { dev: 'flannel.1', mac: 'aa:bb:cc:00:00:04', dst: '192.0.2.4' },
    ],
  });
  assert.deepEqual(transcript, [
    'bridge fdb replace aa:bb:cc:00:00:04 dev flannel.1 dst 192.0.2.4 self permanent',
    'bridge fdb del aa:bb:cc:00:00:03 dev flannel.1 dst 192.0.2.3 self',
    'ip neigh replace 10.5.4.0 lladdr aa:bb:cc:00:00:04 dev flannel.1 nud permanent',
    'ip neigh del 10.5.3.0 dev flannel.1',
    'ip route del 10.5.3.0/24 dev flannel.1',
    'ip route replace 10.5.4.0/24 via 10.5.4.0 dev flannel.1 onlink',
  ]);
  assert.deepEqual(r.lines, transcript);
  // Applied again against a kernel that already matches: nothing to run.
  const same = new KernelStateApplier({
    scope: { network: parseIP4Net('10.5.0.0/16'), routeDevs: ['flannel.1'], ownedDevs: [] },
    readIp: new IpRoute({ mode: 'plan', planOutputs: { '-4 -json route show table main': JSON.stringify([{ dst: '10.5.2.0/24', gateway: '10.5.2.0', dev: 'flannel.1', flags: ['onlink'] }]) } }),
    readBridge: new IpRoute({ mode: 'plan', binary: 'bridge' }),
    writeIp: new IpRoute({ mode: 'plan' }),
    writeBridge: new IpRoute({ mode: 'plan', binary: 'bridge' }),
    log: createLogger('test'),
  });
  assert.deepEqual((await same.apply({ routes: [{ dst: '10.5.2.0/24', via: '10.5.2.0', dev: 'flannel.1', onlink: true }], neighs: [], fdb: [] })).lines, []);
});

test('a failing ip line is logged with the command and the message, and the rest of the batch still applies', async () => {
  lines.length = 0;
  const ip = new IpRoute();
  // The real ip, on routes that cannot exist: every line fails, each is reported on its own.
  const failures = await ip.batch(['route del 203.0.113.0/24 dev lo', 'route del 203.0.113.1/32 dev lo']);
  assert.equal(failures.length, 2);
  assert.equal(failures[0]!.line, 'route del 203.0.113.0/24 dev lo');
  assert.match(failures[0]!.message, /No such process|Cannot find|RTNETLINK/);
});

test('vxlan options: defaults as flannel, and clear errors for bad values', () => {
  assert.deepEqual(parseVxlanOptions({ Type: 'vxlan' }), { vni: 1, port: 0, gbp: false, learning: false, directRouting: false, mtu: 0 });
  assert.equal(parseVxlanOptions({ vni: 42, directrouting: true }).vni, 42);
  assert.throws(() => parseVxlanOptions({ VNI: 0 }), /VNI must be an integer in 1\.\.16777215, got 0/);
  assert.throws(() => parseVxlanOptions({ VNI: 16_777_216 }), /VNI/);
  assert.throws(() => parseVxlanOptions({ Port: -1 }), /Port must be an integer in 0\.\.65535/);
  assert.throws(() => parseVxlanOptions({ DirectRouting: 'yes' }), /DirectRouting must be true or false/);
});

test('ipip refuses an IPv6-only network with the reason and the way out; on dual stack it says IPv6 gets no routes', () => {
  const v6only = backendContext({ EnableIPv4: false, EnableIPv6: true, IPv6Network: 'fd00:64::/56', Backend: { Type: 'ipip' } });
  assert.throws(() => new IpipBackend(v6only, { ip: new IpRoute({ mode: 'plan' }), readIp: new IpRoute({ mode: 'plan' }) }), /ipip backend: an IPv6-only network \(EnableIPv4 false\) cannot run on ipip, which tunnels IPv4 only.*use vxlan or host-gw/);
  lines.length = 0;
  const dual = backendContext({ Network: '10.5.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:64::/56', Backend: { Type: 'ipip' } });
  new IpipBackend(dual, { ip: new IpRoute({ mode: 'plan' }), readIp: new IpRoute({ mode: 'plan' }) });
  assert.ok(lines.some((l) => /ipip carries IPv4 only: IPv6 subnets get no routes/.test(l)), lines.join('\n'));
});

test('the applier of an IPv6-only network reads and owns IPv6 state only', async () => {
  const readIp = new IpRoute({
    mode: 'plan',
    planOutputs: {
      '-6 -json route show table main': JSON.stringify([
        { dst: 'fd00:64:0:2::/64', gateway: 'fd00:64:0:2::', dev: 'flannel-v6.1', flags: ['onlink'] },
        { dst: 'fd00:64:0:9::/64', gateway: 'fd00:64:0:9::', dev: 'flannel-v6.1', flags: ['onlink'] },
      ]),
    },
  });
  const ip = new IpRoute({ mode: 'plan' });
  const applier = new KernelStateApplier({
    scope: { network6: { ip: 0xfd000064000000000000000000000000n, prefixLen: 56 }, routeDevs: ['flannel-v6.1'], ownedDevs: [] },
    readIp,
    readBridge: new IpRoute({ mode: 'plan', binary: 'bridge' }),
    writeIp: ip,
    writeBridge: new IpRoute({ mode: 'plan', binary: 'bridge' }),
    log: createLogger('test'),
  });
  const r = await applier.apply({ routes: [{ dst: 'fd00:64:0:2::/64', via: 'fd00:64:0:2::', dev: 'flannel-v6.1', onlink: true }], neighs: [], fdb: [], policies: [] });
  assert.deepEqual(r.lines, ['ip route del fd00:64:0:9::/64 dev flannel-v6.1']);
  assert.ok(!readIp.lines().some((l) => l.includes('-4')), `no IPv4 reads: ${readIp.lines().join('; ')}`);
});
