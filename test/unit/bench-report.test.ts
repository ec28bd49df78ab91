import { test } from 'node:test';
import assert from 'node:assert/strict';
import { computeRatios, metricTable, ratioColumns, renderTable, type PathResult } from '../../bench/report.js';
import { percentile, ratio } from '../../bench/stats.js';
import { parsePing, summariseRtts } from '../../bench/latency.js';
import { cpuPerGB, parseProcStat } from '../../bench/cpu.js';
import { parseArgs } from '../../bench/args.js';
import { networkAddress, parseSubnetEnv } from '../../bench/paths.js';
import type { SuiteResult } from '../../bench/measure.js';

function suite(gbps: number, rttMs: number, cpuPerGBValue?: number): SuiteResult {
  const tcp = { protocol: 'TCP' as const, streams: 1, seconds: 8, bytes: gbps * 1e9, bitsPerSecond: gbps * 1e9, retransmits: 0 };
  const udp = (len: number, bps: number) => ({
    protocol: 'UDP' as const, datagramBytes: len, seconds: 8, bytes: 1, bitsPerSecond: bps, sentBitsPerSecond: bps * 2, lostPercent: 50, lostPackets: 1, packets: 2, jitterMs: 0.01,
  });
  return {
    tcp1: tcp,
    tcp4: { ...tcp, streams: 4, bitsPerSecond: 2 * gbps * 1e9 },
    udp1400: udp(1400, gbps * 1e8),
    udp64: udp(64, gbps * 1e7),
    latency: { method: 'ping', sent: 20, received: 20, minMs: rttMs, avgMs: rttMs, p50Ms: rttMs, maxMs: rttMs },
    cpu: cpuPerGBValue === undefined ? undefined : { tcp1: { cpuSeconds: 1, bytes: 1e9, secondsPerGB: cpuPerGBValue } },
    errors: {},
  };
}

const RESULTS: PathResult[] = [
  { path: 'veth', label: 'bare veth', status: 'ok', suite: suite(20, 0.05) },
  { path: 'vxlan', label: 'kernel VXLAN', status: 'ok', suite: suite(10, 0.1) },
  { path: 'udp', label: 'flannel-ts udp', status: 'ok', suite: suite(2, 0.4, 3.5) },
];

test('ratio: plain division, null for missing or zero references', () => {
  assert.equal(ratio(2, 4), 0.5);
  assert.equal(ratio(null, 4), null);
  assert.equal(ratio(2, 0), null);
  assert.equal(ratio(2, undefined), null);
  assert.equal(ratio(NaN, 1), null);
});

test('percentile: nearest rank', () => {
  assert.equal(percentile([1, 2, 3, 4], 50), 2);
  assert.equal(percentile([1, 2, 3, 4, 5], 50), 3);
  assert.equal(percentile([7], 50), 7);
  assert.ok(Number.isNaN(percentile([], 50)));
});

test('ratio columns: every path against each reference, no inverse reference pairs', () => {
  assert.deepEqual(ratioColumns(['veth', 'vxlan', 'udp']).map((c) => c.name), ['vxlan/veth', 'udp/vxlan', 'udp/veth']);
  assert.deepEqual(ratioColumns(['veth', 'udp']).map((c) => c.name), ['udp/veth']);
  assert.deepEqual(ratioColumns(['udp']), []);
  // Our userspace WireGuard head to head with wireguard-go, besides the references.
  assert.deepEqual(ratioColumns(['vxlan', 'ftwg', 'wggo']).map((c) => c.name), ['ftwg/wggo', 'ftwg/vxlan', 'wggo/vxlan']);
  assert.deepEqual(ratioColumns(['vxlan', 'vxlan6', 'ftvxlan6']).map((c) => c.name), ['ftvxlan6/vxlan6', 'vxlan6/vxlan', 'ftvxlan6/vxlan']);
});

test('computeRatios: throughput and latency ratios, none for loss or CPU', () => {
  const table = metricTable(RESULTS);
  assert.equal(table.tcp1!.udp, 2);
  assert.equal(table.cpuPerGB!.udp, 3.5);
  assert.equal(table.cpuPerGB!.veth, null);
  const r = computeRatios(table, ratioColumns(['veth', 'vxlan', 'udp']));
  assert.equal(r['udp/vxlan']!.tcp1, 0.2);
  assert.equal(r['udp/veth']!.tcp1, 0.1);
  assert.equal(r['vxlan/veth']!.tcp4, 0.5);
  assert.ok(Math.abs(r['udp/vxlan']!.rttAvg! - 4) < 1e-12);
  assert.equal('udp1400loss' in r['udp/vxlan']!, false);
  assert.equal('cpuPerGB' in r['udp/vxlan']!, false);
});

test('renderTable: values, ratios, and unavailable paths with their reason', () => {
  const results: PathResult[] = [
    RESULTS[0]!,
    RESULTS[1]!,
    { path: 'udp', label: 'flannel-ts udp', status: 'unavailable', reason: 'bin/flanneld not found in this checkout' },
  ];
  const text = renderTable(results);
  const lines = text.split('\n');
  assert.match(lines[0]!, /^metric\s+bare veth\s+kernel VXLAN\s+vxlan\/veth$/);
  assert.ok(lines.some((l) => /^TCP 1 stream \(Gbit\/s\)\s+20\.00\s+10\.00\s+0\.50x$/.test(l)), text);
  assert.ok(lines.some((l) => /^RTT avg \(ms\)\s+0\.050\s+0\.100\s+2\.00x$/.test(l)), text);
  assert.ok(!lines.some((l) => l.startsWith('daemon CPU')), 'no CPU row without daemons');
  assert.ok(lines.includes('flannel-ts udp: unavailable: bin/flanneld not found in this checkout'));
});

test('renderTable: nothing measured', () => {
  assert.match(renderTable([{ path: 'udp', label: 'flannel-ts udp', status: 'failed', reason: 'x' }]), /^\(no path measured\)\nflannel-ts udp: failed: x$/);
});

test('parsePing: summary and median of the replies', () => {
  const out = `PING 192.0.2.2 (192.0.2.2) 56(84) bytes of data.
64 bytes from 192.0.2.2: icmp_seq=1 ttl=64 time=0.118 ms
64 bytes from 192.0.2.2: icmp_seq=2 ttl=64 time=0.037 ms
64 bytes from 192.0.2.2: icmp_seq=3 ttl=64 time=0.040 ms

--- 192.0.2.2 ping statistics ---
3 packets transmitted, 3 received, 0% packet loss, time 105ms
rtt min/avg/max/mdev = 0.037/0.065/0.118/0.037 ms
`;
  assert.deepEqual(parsePing(out), { method: 'ping', sent: 3, received: 3, minMs: 0.037, avgMs: 0.065, p50Ms: 0.04, maxMs: 0.118 });
  assert.throws(() => parsePing('--- x ping statistics ---\n2 packets transmitted, 0 received, 100% packet loss, time 1ms\n'), /no ping replies/);
  assert.throws(() => parsePing('ping: connect: Network is unreachable'), /unrecognised/);
});

test('summariseRtts: UDP echo fallback', () => {
  const r = summariseRtts(4, [0.3, 0.1, 0.2]);
  assert.equal(r.received, 3);
  assert.equal(r.p50Ms, 0.2);
  assert.ok(Math.abs(r.avgMs - 0.2) < 1e-12);
  assert.throws(() => summariseRtts(3, []), /no echo replies/);
});

test('parseProcStat: utime and stime even with spaces and parens in the name', () => {
  const line = '4242 (node (worker) x) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 75 0 0 20 0 11 0 1000 0 0';
  assert.deepEqual(parseProcStat(line), { ppid: 1, utime: 250, stime: 75, cutime: 0, cstime: 0 });
  assert.deepEqual(parseProcStat('7 (ip) S 1 7 7 0 -1 0 0 0 0 0 3 4 12 9 20 0 1 0 5 0 0'), { ppid: 1, utime: 3, stime: 4, cutime: 12, cstime: 9 });
  assert.equal(cpuPerGB(2, 4e9), 0.5);
  assert.equal(cpuPerGB(2, 0), null);
});

test('parseArgs: defaults, --quick, --only order, errors', () => {
  const ref = process.env.FLANNELD_REF;
  delete process.env.FLANNELD_REF;
  const d = parseArgs([], '/out');
  assert.equal(d.seconds, 8);
  assert.deepEqual(d.paths, ['veth', 'vxlan', 'ftvxlan', 'vxlan6', 'ftvxlan6', 'udp', 'ftwg', 'wggo']);
  // flannel's own udp joins the default run when FLANNELD_REF names its flanneld.
  process.env.FLANNELD_REF = '/opt/flanneld';
  assert.deepEqual(parseArgs([], '/out').paths, ['veth', 'vxlan', 'ftvxlan', 'vxlan6', 'ftvxlan6', 'udp', 'flannel-udp', 'ftwg', 'wggo']);
  if (ref === undefined) delete process.env.FLANNELD_REF;
  else process.env.FLANNELD_REF = ref;
  assert.deepEqual(parseArgs(['--only', 'flannel-udp,udp'], '/out').paths, ['udp', 'flannel-udp']);
  const q = parseArgs(['--quick', '--only', 'udp,veth'], '/out');
  assert.equal(q.seconds, 2);
  assert.deepEqual(q.paths, ['veth', 'udp']);
  assert.deepEqual(parseArgs(['--only', 'ftvxlan,vxlan'], '/out').paths, ['vxlan', 'ftvxlan']);
  assert.equal(parseArgs(['--quick', '--duration=5'], '/out').seconds, 5);
  assert.throws(() => parseArgs(['--only', 'wireguard'], '/out'), /unknown path/);
  assert.throws(() => parseArgs(['--duration', '0'], '/out'), /--duration/);
  assert.throws(() => parseArgs(['--bogus'], '/out'), /unknown option/);
});

test('subnet.env parsing and the network address of a lease', () => {
  const env = parseSubnetEnv('FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.81.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n');
  assert.equal(env.FLANNEL_SUBNET, '10.5.81.1/24');
  assert.equal(env.FLANNEL_MTU, '1472');
  assert.equal(networkAddress('10.5.81.1/24'), '10.5.81.0');
  assert.equal(networkAddress('10.5.81.0/24'), '10.5.81.0');
  assert.equal(networkAddress('10.5.255.7/20'), '10.5.240.0');
  assert.equal(networkAddress('10.5.81.9'), '10.5.81.9');
  assert.throws(() => networkAddress('10.5.81/24'), /bad CIDR/);
});
