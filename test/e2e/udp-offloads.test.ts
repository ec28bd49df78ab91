/**
 * The udp dataplane's offloads and worker pairs end to end, two hosts at a
 * time on the embedded store: USO and GRO on with several workers, both
 * off with one worker, and a host on the plain path (no offloads at all)
 * talking to one with everything on. Each pair carries TCP (iperf3) and
 * numbered UDP flows both ways, plain sends and UDP_SEGMENT sends (flannel0
 * then sees UDP super-packets, as from a QUIC stack), and every UDP flow
 * must arrive in order and intact.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { waitFor } from '../helpers/netns.js';
import { startDaemon } from '../helpers/daemon.js';
import { bringUp, localCluster, startHost, tcpFlows, teardown, type Cluster } from '../helpers/udp-cluster.js';

const FLOWS = join(dirname(fileURLToPath(import.meta.url)), 'fixtures', 'udp-flows.js');
const HEALTHZ = ['--healthz-ip=127.0.0.1', '--healthz-port=8471'];
const PORT = 7100;

interface FlowReport {
  count: number;
  reordered: number;
  corrupt: number;
}

/** `flows` x `perFlow` numbered datagrams from host `from` to host `to` (pod addresses); returns what the receiver saw per flow. */
async function udpFlows(c: Cluster, from: number, to: number, o: { flows: number; perFlow: number; size: number; gso: boolean }): Promise<FlowReport[]> {
  const expected = o.flows * o.perFlow;
  const rx = c.set.hosts[to]!.spawn([process.execPath, FLOWS, 'recv', c.pod[to]!, String(PORT), String(expected), '1500'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  rx.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  rx.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<void>((resolve) => rx.once('exit', () => resolve()));
  await waitFor(() => out.includes('ready') || (rx.exitCode !== null ? 'gone' : null), 5000, 'udp-flows receiver');
  const tx = await c.set.hosts[from]!.exec([process.execPath, FLOWS, 'send', c.pod[from]!, c.pod[to]!, String(PORT), String(o.flows), String(o.perFlow), String(o.size), o.gso ? '1' : '0'], {
    timeoutMs: 30_000,
  });
  assert.equal(tx.code, 0, `sender: ${tx.stderr}`);
  await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
  rx.kill('SIGKILL');
  const line = out.split('\n').find((l) => l.startsWith('{'));
  assert.ok(line, `receiver printed no report: ${out} ${err}`);
  const flows = Object.values((JSON.parse(line) as { flows: Record<string, FlowReport> }).flows);
  const name = `host${from} -> host${to} (${o.gso ? 'UDP_SEGMENT' : 'plain'} sends, ${o.flows} x ${o.perFlow} x ${o.size} B)`;
  assert.equal(flows.length, o.flows, `${name}: every flow arrived`);
  for (const f of flows) {
    assert.equal(f.reordered, 0, `${name}: no flow reordered`);
    assert.equal(f.corrupt, 0, `${name}: every datagram intact`);
  }
  const got = flows.reduce((a, f) => a + f.count, 0);
  // Paced sends on an idle overlay: loss would mean a broken path, not overload.
  assert.ok(got >= expected * 0.9, `${name}: ${got} of ${expected} arrived`);
  return flows;
}

async function metrics(c: Cluster, i: number): Promise<Map<string, number>> {
  const r = await c.set.hosts[i]!.exec(['curl', '-sf', 'http://127.0.0.1:8471/metrics'], { check: true });
  const m = new Map<string, number>();
  for (const l of r.stdout.split('\n')) {
    const x = /^flannel_udp_(\S+) (\S+)$/.exec(l);
    if (x) m.set(x[1]!, Number(x[2]));
  }
  return m;
}

/** Two hosts with per-host daemon environments, /metrics on both. */
async function pair(prefix: string, env: (i: number) => NodeJS.ProcessEnv): Promise<Cluster> {
  const { c } = await localCluster(2, prefix);
  c.hostEnv = env;
  await bringUp(c, (i) => startHost(c, i, HEALTHZ));
  return c;
}

function startedLine(c: Cluster, i: number): string {
  const l = c.daemons[i]!.lines.find((x) => /udp dataplane started/.test(x));
  assert.ok(l, `host${i} logged its dataplane start`);
  return l;
}

describe('udp dataplane with USO and GRO on and three worker pairs', () => {
  let c: Cluster;
  before(async () => {
    c = await pair('ftsuo', () => ({ FLANNEL_UDP_WORKERS: '3' }));
  });
  after(() => teardown(c));

  test('flannel0 has three queues and three sockets share port 8285', async () => {
    for (const i of [0, 1]) {
      // tunSteered: flannel0's queues chosen by our steering program (a flow keeps its tx worker).
      assert.match(startedLine(c, i), /offload=true rxCoalesce=true uso=true udpGro=true workers=3 tunSteered=true/);
      const h = c.set.hosts[i]!;
      const q = (await h.exec(['ls', '/sys/class/net/flannel0/queues'], { check: true })).stdout.split(/\s+/).filter((x) => x.startsWith('tx-'));
      assert.equal(q.length, 3, `host${i} flannel0 tx queues: ${q.join(' ')}`);
      const socks = (await h.exec(['cat', '/proc/net/udp'], { check: true })).stdout.split('\n').filter((l) => / [0-9A-F]{8}:205D /.test(l));
      assert.equal(socks.length, 3, `host${i}: three sockets on 8285`);
    }
  });

  test('TCP both ways', async () => {
    await tcpFlows(c, 0, 1);
    await tcpFlows(c, 1, 0);
  });

  test('echo replies leave from the rx worker without waking the tx worker', async () => {
    const before = (await metrics(c, 1)).get('tx_by_rx_worker_packets_total') ?? 0;
    const r = await c.set.hosts[0]!.exec(['ping', '-c', '20', '-i', '0.05', '-W', '1', '-I', c.pod[0]!, c.pod[1]!], { timeoutMs: 15_000 });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    const after = (await metrics(c, 1)).get('tx_by_rx_worker_packets_total') ?? 0;
    // The tx worker may win the race for a few; most replies go out at once.
    assert.ok(after - before >= 10, `replies sent by the rx worker: ${after - before} of 20`);
  });

  test('UDP flows both ways arrive in order, spread over the worker pairs', async () => {
    const before = await metrics(c, 1);
    await udpFlows(c, 0, 1, { flows: 8, perFlow: 400, size: 1200, gso: false });
    await udpFlows(c, 1, 0, { flows: 8, perFlow: 400, size: 1200, gso: false });
    const after = await metrics(c, 1);
    const rxQueues = [0, 1, 2].filter((q) => (after.get(`queue_packets_total{queue="${q}",direction="rx"}`) ?? 0) > (before.get(`queue_packets_total{queue="${q}",direction="rx"}`) ?? 0) + 100);
    assert.ok(rxQueues.length >= 2, `8 flows reached more than one rx worker: queues ${rxQueues.join(',')}`);
  });

  test('UDP_SEGMENT senders: super-packets are cut on the way in, received as GRO super-datagrams, glued on the way out, in order', async () => {
    const tx0 = await metrics(c, 0);
    const rx0 = await metrics(c, 1);
    await udpFlows(c, 0, 1, { flows: 4, perFlow: 320, size: 1000, gso: true });
    const tx1 = await metrics(c, 0);
    const rx1 = await metrics(c, 1);
    const d = (a: Map<string, number>, b: Map<string, number>, k: string) => (b.get(k) ?? 0) - (a.get(k) ?? 0);
    assert.ok(d(tx0, tx1, 'tun_offload_udp_super_packets_total') >= 10, `UDP super-packets read from flannel0: ${d(tx0, tx1, 'tun_offload_udp_super_packets_total')}`);
    assert.ok(d(rx0, rx1, 'rx_gro_super_datagrams_total') >= 10, `GRO super-datagrams: ${d(rx0, rx1, 'rx_gro_super_datagrams_total')}`);
    assert.ok(d(rx0, rx1, 'rx_super_packets_total') >= 10, `super-packets written to flannel0: ${d(rx0, rx1, 'rx_super_packets_total')}`);
    assert.equal(d(rx0, rx1, 'dropped_packets_total{direction="rx",reason="malformed"}'), 0);
  });
});

describe('a second flanneld with worker pairs on a host already running one', () => {
  let c: Cluster;
  before(async () => {
    c = await pair('ftsu2', () => ({ FLANNEL_UDP_WORKERS: '2' }));
  });
  after(() => teardown(c));

  test('stops before touching flannel0 (held by the first daemon in this network namespace); the first keeps its queues and traffic', async () => {
    const h = c.set.hosts[0]!;
    const second = startDaemon([...c.storeArgs, `--iface=${h.iface}`, `--subnet-file=${join(c.dir, 'second.env')}`], {
      name: 'second',
      prefix: ['ip', 'netns', 'exec', h.ns],
      env: { FLANNEL_UDP_WORKERS: '2' },
    });
    const code = await Promise.race([second.exited, new Promise<string>((r) => setTimeout(() => r('still running'), 20_000))]);
    if (code === 'still running') await second.stop('SIGKILL');
    assert.equal(code, 1, `the second daemon exits 1: ${second.lines.slice(-5).join('\n')}`);
    assert.ok(second.lines.some((l) => /device flannel0 is in use by another running flanneld in this network namespace/.test(l)), second.lines.slice(-5).join('\n'));
    const q = (await h.exec(['ls', '/sys/class/net/flannel0/queues'], { check: true })).stdout.split(/\s+/).filter((x) => x.startsWith('tx-'));
    assert.equal(q.length, 2, 'flannel0 still has exactly the first daemon\'s two queues');
    await tcpFlows(c, 1, 0);
  });
});

describe('udp dataplane with USO, GRO and the reply fast path off and one worker pair', () => {
  let c: Cluster;
  before(async () => {
    c = await pair('ftsuf', () => ({ FLANNEL_UDP_WORKERS: '1', FLANNEL_UDP_USO: '0', FLANNEL_UDP_GRO: '0', FLANNEL_UDP_REPLY_FAST: '0' }));
  });
  after(() => teardown(c));

  test('TCP and UDP both ways, UDP_SEGMENT sends segmented by the kernel before flannel0, nothing coalesced', async () => {
    for (const i of [0, 1]) assert.match(startedLine(c, i), /offload=true rxCoalesce=false uso=false udpGro=false workers=1/);
    await tcpFlows(c, 0, 1);
    await tcpFlows(c, 1, 0);
    await udpFlows(c, 0, 1, { flows: 4, perFlow: 400, size: 1200, gso: false });
    await udpFlows(c, 1, 0, { flows: 4, perFlow: 320, size: 1000, gso: true });
    const m = [await metrics(c, 0), await metrics(c, 1)];
    for (const x of m) {
      // Overload is counted where it sheds: flannel0's queue (the kernel's count) and our socket's buffer.
      assert.ok(x.has('tun_queue_dropped_packets_total'), 'flannel0 queue drops are exported');
      assert.ok(x.has('dropped_packets_total{direction="rx",reason="socket_buffer"}'), 'socket buffer drops are exported');
      assert.equal(x.get('tun_offload_udp_super_packets_total') ?? 0, 0);
      assert.equal(x.get('rx_gro_super_datagrams_total') ?? 0, 0);
      assert.equal(x.get('rx_super_packets_total') ?? 0, 0);
      assert.equal(x.get('tx_by_rx_worker_packets_total') ?? 0, 0, 'FLANNEL_UDP_REPLY_FAST=0: the tx worker sends everything');
    }
  });
});

describe('interop: a host with every offload and two workers, and a host on the plain path', () => {
  let c: Cluster;
  before(async () => {
    c = await pair('ftsup', (i) => (i === 0 ? { FLANNEL_UDP_WORKERS: '2' } : { FLANNEL_UDP_OFFLOAD: '0', FLANNEL_UDP_WORKERS: '1' }));
  });
  after(() => teardown(c));

  test('TCP and UDP both ways, in order', async () => {
    assert.match(startedLine(c, 0), /offload=true .*workers=2/);
    assert.match(startedLine(c, 1), /offload=false .*workers=1/);
    await tcpFlows(c, 0, 1);
    await tcpFlows(c, 1, 0);
    await udpFlows(c, 0, 1, { flows: 4, perFlow: 320, size: 1000, gso: true });
    await udpFlows(c, 1, 0, { flows: 4, perFlow: 400, size: 1200, gso: false });
  });
});
