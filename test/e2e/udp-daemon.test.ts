/**
 * flanneld with the udp backend, end to end: hosts are network namespaces on
 * a bridge, each runs bin/flanneld, and each puts its FLANNEL_SUBNET on a
 * cni0 bridge as the CNI plugin would. Traffic goes pod address to pod
 * address through flannel0 and UDP 8285. Once with the embedded store, once
 * with a real etcd running inside the bridge's namespace.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { addAddress, createHosts, isListening, run, waitFor } from '../helpers/netns.js';
import { FLANNELCTL, startDaemon } from '../helpers/daemon.js';
import { startEtcd, type TestEtcd } from '../helpers/etcd.js';
import { attachPodBridge } from '../helpers/pod-bridge.js';
import { LocalStore } from '../../src/subnet/local-store.js';
import {
  bringUp,
  CONFIG,
  localCluster,
  P,
  ping,
  pingMatrix,
  pingsEventually,
  startHost,
  subnetEnv,
  tcpFlows,
  teardown,
  withHealthzOnHost0,
  type Cluster,
} from '../helpers/udp-cluster.js';

describe('udp backend on a secondary address (--iface naming an address that is not the primary)', () => {
  let c: Cluster;
  before(async () => {
    ({ c } = await localCluster(2, 'ftsus'));
    await addAddress(c.set.hosts[1]!, '192.0.2.102/24');
    await bringUp(c, (i) => (i === 1 ? startHost(c, 1, [], '192.0.2.102') : startHost(c, i)));
  });
  after(() => teardown(c));

  test('the socket is bound to that address, so peers see datagrams from the PublicIP they know', async () => {
    assert.ok(c.daemons[1]!.lines.some((l) => /publicIP=192\.0\.2\.102/.test(l)), 'host1 publishes its secondary address');
    const ss = await c.set.hosts[1]!.exec(['ss', '-uln', 'sport = :8285']);
    assert.match(ss.stdout, /192\.0\.2\.102:8285/, ss.stdout);
    await pingsEventually(c, 1, 0);
    await pingsEventually(c, 0, 1);
  });
});

describe('udp dataplane that heals: flannel0 deleted under a running daemon', () => {
  let c: Cluster;
  before(async () => {
    ({ c } = await localCluster(2, 'ftsuh'));
    await bringUp(c, withHealthzOnHost0(c));
  });
  after(() => teardown(c));

  const get = async (path: string) => {
    const r = await c.set.hosts[0]!.exec(
      [process.execPath, '-e', `fetch('http://127.0.0.1:8471${path}').then(async r=>process.stdout.write(r.status+' '+await r.text()))`],
      { timeoutMs: 5000 },
    );
    return r.stdout;
  };

  test('the workers are restarted, /healthz says 503 with the reason meanwhile, traffic comes back, the restart is counted', async () => {
    await pingsEventually(c, 0, 1);
    assert.match(await get('/healthz'), /^200 /);
    await c.set.hosts[0]!.exec(['ip', 'link', 'del', 'flannel0'], { check: true });
    const down = await waitFor(async () => {
      const h = await get('/healthz');
      return h.startsWith('503 ') ? h : null;
    }, 5000, 'healthz 503', 100);
    // /healthz names the component only (it may be reachable from anywhere); the reason is in the log.
    assert.equal(down, '503 flanneld is unhealthy: udp (see the log)\n');
    assert.ok(c.daemons[0]!.lines.some((l) => /ERROR .*packet worker failed role=(tx|rx)/.test(l)), c.daemons[0]!.lines.join('\n'));
    await c.daemons[0]!.waitForLine(/udp dataplane restarted/, 15_000);
    await pingsEventually(c, 0, 1);
    await pingsEventually(c, 1, 0);
    assert.match(await get('/healthz'), /^200 /);
    assert.match(await get('/metrics'), /^flannel_udp_dataplane_restarts_total 1$/m);
    const link = await c.set.hosts[0]!.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', 'flannel0'], { check: true });
    assert.match(link.stdout, new RegExp(`inet ${c.pod[0]!.replace(/\.1$/, '.0').replace(/\./g, '\\.')}/32`), 'flannel0 programmed again');
  });

  test('a second flanneld in the same network namespace stops with one line; it never attaches to flannel0', async () => {
    const h0 = c.set.hosts[0]!;
    const second = startDaemon([...c.storeArgs, `--iface=${h0.iface}`, `--subnet-file=${join(c.dir, 'h0-second.env')}`], { name: 'h0-second', prefix: ['ip', 'netns', 'exec', h0.ns] });
    assert.notEqual(await second.exited, 0);
    assert.ok(second.lines.some((l) => /ERROR .*device flannel0 is in use by another running flanneld in this network namespace/.test(l)), second.lines.join('\n'));
    assert.ok(c.daemons[0]!.alive);
    await pingsEventually(c, 0, 1);
    await pingsEventually(c, 1, 0);
  });
});

describe('udp backend with the smallest TCP MSS Linux allows (48 bytes)', () => {
  let c: Cluster;
  before(async () => {
    ({ c } = await localCluster(2, 'ftsum'));
    await bringUp(c, withHealthzOnHost0(c));
  });
  after(() => teardown(c));

  test('TSO super-packets of ~1,800 segments never reach the worker: the stream flows and nothing is dropped as malformed', async () => {
    await pingsEventually(c, 0, 1);
    // The server advertises MSS 48 towards the client's pods, so host0 sends 36-byte segments.
    const clientNet = c.pod[0]!.replace(/\.1$/, '.0/24');
    await c.set.hosts[1]!.exec(['ip', 'route', 'replace', clientNet, 'dev', 'flannel0', 'advmss', '48'], { check: true });
    const tso = await c.set.hosts[0]!.exec(['ip', '-d', 'link', 'show', 'flannel0']);
    assert.match(tso.stdout, /gso_max_segs 1024\b/, tso.stdout);
    const srv = c.set.hosts[1]!.spawn(['iperf3', '-s', '-1', '-B', c.pod[1]!], { stdio: 'ignore' });
    await waitFor(() => isListening(c.set.hosts[1]!, 5201), 5000, 'iperf3 server');
    const r = await c.set.hosts[0]!.exec(['iperf3', '-c', c.pod[1]!, '-B', c.pod[0]!, '-t', '2', '-J'], { timeoutMs: 20_000 });
    srv.kill();
    assert.equal(r.code, 0, r.stderr || r.stdout.slice(0, 500));
    const res = JSON.parse(r.stdout) as { end: { sum_received: { bytes: number } } };
    const metrics = await c.set.hosts[0]!.exec([process.execPath, '-e', "fetch('http://127.0.0.1:8471/metrics').then(r=>r.text()).then(t=>process.stdout.write(t))"], { timeoutMs: 5000 });
    const malformed = Number(/flannel_udp_dropped_packets_total\{direction="tx",reason="malformed"\} (\d+)/.exec(metrics.stdout)?.[1]);
    const superPackets = Number(/flannel_udp_tun_offload_super_packets_total (\d+)/.exec(metrics.stdout)?.[1]);
    assert.equal(malformed, 0, 'no super-packet dropped');
    assert.ok(superPackets > 0, 'offloads were in use');
    assert.ok(res.end.sum_received.bytes > 2e6, `${res.end.sum_received.bytes} bytes in 2 s with 36-byte segments`);
  });
});

describe('udp backend, three hosts on the embedded store', () => {
  let c: Cluster;
  let store: LocalStore;
  before(async () => {
    ({ c, store } = await localCluster(3, 'ftsud'));
    // Host 2 receives without TCP coalescing, so that variant stays tested too.
    c.hostEnv = (i) => (i === 2 ? { FLANNEL_UDP_GRO: '0' } : {});
    await bringUp(c);
  });
  after(async () => {
    await store?.close();
    await teardown(c);
  });

  test('flannel0 is set up as flannel does it', async () => {
    const h = c.set.hosts[0]!;
    const link = JSON.parse((await h.exec(['ip', '-j', '-d', 'link', 'show', 'flannel0'], { check: true })).stdout)[0] as { mtu: number; flags: string[]; linkinfo?: { info_kind: string } };
    assert.equal(link.mtu, 1472);
    assert.ok(link.flags.includes('POINTOPOINT') && link.flags.includes('NOARP') && link.flags.includes('UP'), String(link.flags));
    assert.equal(link.linkinfo?.info_kind, 'tun');
    const addrs = (await h.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', 'flannel0'], { check: true })).stdout;
    const net = c.pod[0]!.replace(/\.1$/, '.0');
    assert.match(addrs, new RegExp(`inet ${net.replace(/\./g, '\\.')}/32`));
    const routes = (await h.exec(['ip', 'route', 'show', 'dev', 'flannel0'], { check: true })).stdout;
    assert.match(routes, /^10\.5\.0\.0\/16 /m);
    const udp = (await h.exec(['cat', '/proc/net/udp'], { check: true })).stdout;
    // /proc/net/udp writes the bound address as a little-endian hex word: 192.0.2.1 is 010200C0.
    const hex = h.ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0').toUpperCase()).reverse().join('');
    assert.match(udp, new RegExp(`${hex}:205D `), `bound to ${h.ip}:8285, the external interface's address, as flannel`);
  });

  test('three hosts ping each other, pod address to pod address', async () => {
    await pingMatrix(c);
  });

  test('TCP both ways between a coalescing receiver and one without coalescing', async () => {
    await tcpFlows(c, 0, 2);
    await tcpFlows(c, 2, 0);
    assert.ok(c.daemons[0]!.lines.some((l) => /udp dataplane started .*offload=true rxCoalesce=true/.test(l)));
    assert.ok(c.daemons[2]!.lines.some((l) => /udp dataplane started .*offload=true rxCoalesce=false/.test(l)));
  });

  test('a host leaves and its lease is removed: the route is gone and senders get ICMP net-unreachable', async () => {
    const gone = 2;
    const key = `${P}/subnets/${c.pod[gone]!.replace(/\.1$/, '.0')}-24`;
    await c.daemons[gone]!.stop('SIGKILL');
    await store.delete(key);
    await c.daemons[0]!.waitForLine(new RegExp(`lease removed subnet=${c.pod[gone]!.replace(/\.1$/, '.0').replace(/\./g, '\\.')}`), 10_000);
    const r = await waitFor(
      async () => {
        const p = await ping(c, 0, gone, 1);
        return /Destination Net Unreachable/.test(p.out) ? p : null;
      },
      10_000,
      'ICMP net unreachable',
      200,
    );
    assert.notEqual(r.code, 0);
    // The host comes back: it takes its old subnet again (from subnet.env) and traffic flows.
    const back = startHost(c, gone);
    await back.waitForLine(/running/, 20_000);
    assert.equal((await subnetEnv(c, gone)).FLANNEL_SUBNET, `${c.pod[gone]}/24`);
    await pingsEventually(c, 0, gone);
    await pingsEventually(c, gone, 1);
  });

  test('a daemon killed with SIGKILL and restarted: same subnet, traffic resumes, peers untouched', async () => {
    const victim = 0;
    const peersBefore = [1, 2].map((i) => c.daemons[i]!.lines.length);
    await c.daemons[victim]!.stop('SIGKILL');
    const d = startHost(c, victim);
    await d.waitForLine(/running/, 20_000);
    assert.equal((await subnetEnv(c, victim)).FLANNEL_SUBNET, `${c.pod[victim]}/24`);
    await pingsEventually(c, victim, 1);
    await pingsEventually(c, 2, victim);
    for (const [k, i] of [1, 2].entries()) {
      const newLines = c.daemons[i]!.lines.slice(peersBefore[k]);
      assert.ok(!newLines.some((l) => /lease (removed|added)/.test(l)), `host${i} saw no lease change: ${newLines.join('\n')}`);
    }
  });

  test("a peer moves to a new address and restarts there: traffic follows its new PublicIP", async () => {
    const moved = 1;
    const h = c.set.hosts[moved]!;
    await c.daemons[moved]!.stop('SIGTERM');
    // Without promote_secondaries, deleting the old primary address would delete the new one too.
    await h.exec(['sysctl', '-qw', `net.ipv4.conf.${h.iface}.promote_secondaries=1`], { check: true });
    await addAddress(h, '192.0.2.102/24');
    await h.exec(['ip', 'addr', 'del', '192.0.2.2/24', 'dev', h.iface], { check: true });
    // The operator retires the lease of the old address, so the subnet in subnet.env is free to take again.
    const key = `${P}/subnets/${c.pod[moved]!.replace(/\.1$/, '.0')}-24`;
    await store.delete(key);
    const d = startHost(c, moved, [], '192.0.2.102');
    await d.waitForLine(/running/, 20_000);
    assert.equal((await subnetEnv(c, moved)).FLANNEL_SUBNET, `${c.pod[moved]}/24`, 'same subnet on the new address');
    await c.daemons[0]!.waitForLine(/lease added subnet=.* publicIP=192\.0\.2\.102/, 10_000);
    await pingsEventually(c, 0, moved);
    await pingsEventually(c, moved, 2);
  });

  test('dataplane counters are served at /metrics', async () => {
    const h = c.set.hosts[2]!;
    await c.daemons[2]!.stop('SIGTERM');
    const d = startHost(c, 2, ['--healthz-ip=127.0.0.1', '--healthz-port=8471']);
    // healthz is up from the first moment (it answers /readyz while the daemon starts): wait for the daemon itself.
    await d.waitForLine(/ running/, 20_000);
    await pingsEventually(c, 2, 0);
    const r = await h.exec([process.execPath, '-e', "fetch('http://127.0.0.1:8471/metrics').then(r=>r.text()).then(t=>process.stdout.write(t))"], { timeoutMs: 5000 });
    const sent = Number(/^flannel_udp_sent_packets_total (\d+)/m.exec(r.stdout)?.[1]);
    const delivered = Number(/^flannel_udp_delivered_packets_total (\d+)/m.exec(r.stdout)?.[1]);
    assert.ok(sent >= 2 && delivered >= 2, r.stdout);
  });
});

describe('udp backend, two hosts on a real etcd, one with TUN offloads and one on the plain path', () => {
  let c: Cluster;
  let etcd: TestEtcd;
  before(async () => {
    const set = await createHosts(2, { prefix: 'ftsue', topology: 'bridge' });
    // etcd lives in the bridge's namespace, reachable from every host at 192.0.2.254.
    await run('ip', ['-n', set.switchNs!, 'addr', 'add', '192.0.2.254/24', 'dev', 'br0'], { check: true });
    etcd = await startEtcd({ netns: set.switchNs!, host: '192.0.2.254' });
    const put = await run('ip', ['netns', 'exec', set.switchNs!, process.execPath, FLANNELCTL, `--etcd-endpoints=${etcd.endpoint}`, 'put', `${P}/config`, CONFIG]);
    assert.equal(put.code, 0, put.stderr);
    c = {
      set,
      dir: await mkdtemp(join(tmpdir(), 'fts-udpe-')),
      storeArgs: [`--etcd-endpoints=${etcd.endpoint}`],
      daemons: [],
      pod: [],
      // Host 1 runs the plain one-packet-per-syscall path, so both dataplanes stay tested, and against each other.
      hostEnv: (i) => (i === 1 ? { FLANNEL_UDP_OFFLOAD: '0' } : {}),
    };
    await bringUp(c);
  });
  after(async () => {
    await teardown(c);
    await etcd?.cleanup();
  });

  test('two hosts ping each other through flannel0', async () => {
    await pingMatrix(c);
  });

  test('TCP through the overlay both ways between the offload and the plain dataplane', async () => {
    await tcpFlows(c, 0, 1);
    await tcpFlows(c, 1, 0);
    assert.ok(c.daemons[0]!.lines.some((l) => /udp dataplane started .*offload=true/.test(l)), 'host0 uses offloads');
    assert.ok(c.daemons[1]!.lines.some((l) => /udp dataplane started .*offload=false/.test(l)), 'host1 uses the plain path');
  });

  test('SIGKILL and restart with etcd: same subnet, traffic resumes', async () => {
    await c.daemons[1]!.stop('SIGKILL');
    const d = startHost(c, 1);
    await d.waitForLine(/running/, 20_000);
    assert.equal((await subnetEnv(c, 1)).FLANNEL_SUBNET, `${c.pod[1]}/24`);
    await pingMatrix(c);
  });
});

describe("wire compatibility with flannel's udp backend (a host emulating flannel's flanneld)", () => {
  let c: Cluster;
  let store: LocalStore;
  before(async () => {
    ({ c, store } = await localCluster(2, 'ftsuw'));
    // Host 1 is "flannel's flanneld": its lease is exactly what flannel's udp backend writes.
    await store.create(`${P}/subnets/10.5.250.0-24`, '{"PublicIP":"192.0.2.2","PublicIPv6":null}', 86400);
    const d = startHost(c, 0);
    await d.waitForLine(/lease added subnet=10\.5\.250\.0\/24 publicIP=192\.0\.2\.2/, 20_000);
    const env = await subnetEnv(c, 0);
    await attachPodBridge(c.set.hosts[0]!, env);
    c.pod[0] = env.FLANNEL_SUBNET!.split('/')[0]!;
  });
  after(async () => {
    await store?.close();
    await teardown(c);
  });

  test('bare IPv4 in UDP 8285 both ways: our pings are answered, the peer\'s pings are answered', async () => {
    const peer = c.set.hosts[1]!.spawn(
      [process.execPath, new URL('./fixtures/flannel-peer.js', import.meta.url).pathname, JSON.stringify({ port: 8285, subnet: '10.5.250.0/24', ping: { from: '10.5.250.1', to: c.pod[0], peer: '192.0.2.1', count: 5 } })],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const events: Record<string, unknown>[] = [];
    peer.stdout!.on('data', (b: Buffer) => events.push(...b.toString().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)));
    await waitFor(() => events.some((e) => e.event === 'ready'), 10_000, 'flannel peer ready');
    // Our host -> flannel host: ping is answered, so our datagrams are what flannel expects.
    const r = await c.set.hosts[0]!.exec(['ping', '-c', '3', '-i', '0.2', '-W', '1', '-I', c.pod[0]!, '10.5.250.1'], { timeoutMs: 10_000 });
    assert.equal(r.code, 0, r.stdout + r.stderr);
    // Flannel host -> our host: its echo requests reach our pod address and the replies come back to it.
    await waitFor(() => events.filter((e) => e.icmpType === 0 && e.src === c.pod[0]).length >= 3, 10_000, 'echo replies at the flannel peer');
    peer.kill('SIGTERM');
    const datagrams = events.filter((e) => e.event === 'datagram');
    assert.ok(datagrams.length >= 6);
    for (const d of datagrams) {
      assert.equal(d.bareIPv4, true, `payload is one bare IPv4 packet: ${JSON.stringify(d)}`);
      assert.equal(d.from, '192.0.2.1:8285', 'sent from the PublicIP, source port 8285 as flannel');
    }
    // flannel's proxy decrements TTL once on the way: 64 -> 63.
    assert.ok(datagrams.filter((d) => d.icmpType === 8).every((d) => d.ttl === 63), JSON.stringify(datagrams));
  });
});
