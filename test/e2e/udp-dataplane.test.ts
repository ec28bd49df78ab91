/**
 * The udp backend between real hosts: network namespaces on a bridge, one
 * backend process per host (test/e2e/fixtures/udp-host.ts) fed leases by
 * the test. Needs root, the native addon, ping and iperf3.
 */
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { addAddress, createHosts, waitFor, type HostSet, type TestHost } from '../helpers/netns.js';
import type { CounterName } from '../../src/dataplane/counters.js';

const fixture = (name: string) => fileURLToPath(new URL(`./fixtures/${name}`, import.meta.url));
const addonPath = fileURLToPath(new URL('../../../native/build/Release/flannel_native.node', import.meta.url));
const have = (bin: string) => {
  try {
    execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};
const skip =
  process.getuid?.() !== 0
    ? 'needs root'
    : !existsSync(addonPath)
      ? 'native addon not built'
      : !have('ping') || !have('iperf3')
        ? 'needs ping (iputils-ping) and iperf3'
        : false;

type Counters = Record<CounterName, number>;

/** One backend process inside a namespace, driven over stdin/stdout. */
class UdpHost {
  private readonly waiting: ((line: string) => void)[] = [];
  private readonly early: string[] = [];
  stderr = '';

  private constructor(readonly child: ChildProcess) {
    createInterface({ input: child.stdout! }).on('line', (line) => {
      const w = this.waiting.shift();
      if (w) w(line);
      else this.early.push(line);
    });
    child.stderr!.setEncoding('utf8').on('data', (d: string) => (this.stderr += d));
  }

  static async start(host: TestHost, args: object): Promise<UdpHost> {
    const child = host.spawn([process.execPath, fixture('udp-host.js'), JSON.stringify(args)], { stdio: ['pipe', 'pipe', 'pipe'] });
    const h = new UdpHost(child);
    const first = await h.next(15_000);
    assert.equal(first, 'READY', `backend did not start: ${h.stderr}`);
    return h;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  private next(timeoutMs = 10_000): Promise<string> {
    const ready = this.early.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`no answer from backend within ${timeoutMs}ms; stderr: ${this.stderr}`)), timeoutMs);
      this.waiting.push((line) => {
        clearTimeout(timer);
        resolve(line);
      });
    });
  }

  async cmd(obj: object): Promise<string> {
    this.child.stdin!.write(JSON.stringify(obj) + '\n');
    const line = await this.next();
    if (!line.startsWith('OK')) throw new Error(`backend answered ${line}`);
    return line;
  }

  add(subnet: string, publicIP: string) {
    return this.cmd({ op: 'add', subnet, publicIP });
  }
  remove(subnet: string, publicIP: string) {
    return this.cmd({ op: 'remove', subnet, publicIP });
  }
  async metrics(): Promise<{ counters: Counters; text: string }> {
    const line = await this.cmd({ op: 'metrics' });
    return JSON.parse(line.slice('OK metrics '.length));
  }
  /**
   * The counters once the receive side is at rest. A datagram is counted as
   * received when its batch is read and as delivered after the TUN write, so a
   * snapshot taken while a batch (say, a late retransmit) is between the two sees
   * a gap; the invariant is checked once the worker has finished what it holds.
   */
  async settledCounters(): Promise<Counters> {
    let last = (await this.metrics()).counters;
    const deadline = Date.now() + 3000;
    while (Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100));
      const now = (await this.metrics()).counters;
      const still = now.received === last.received && now.delivered === last.delivered;
      last = now;
      if (still && now.received === accountedFor(now)) break;
    }
    return last;
  }
}

/**
 * Every reason a received datagram is not delivered into TUN: totalDrops(c, 'rx')
 * less rxSocketOverflow, which counts datagrams the kernel dropped before we read
 * them (never in `received`; the flood makes it nonzero).
 */
const RX_DROPS = ['rxMalformed', 'rxTruncated', 'rxUnknownPeer', 'rxSpoofed', 'rxNotLocal', 'rxTunWrite'] as const;
/** The received datagrams the counters account for: delivered, or dropped under one reason. */
const accountedFor = (c: Counters): number => c.delivered + RX_DROPS.reduce((sum, k) => sum + c[k], 0);

const NETWORK = '10.5.0.0/16';
const SUB = ['10.5.81.0/24', '10.5.52.0/24', '10.5.99.0/24'];
const ADDR = ['10.5.81.0', '10.5.52.0', '10.5.99.0'];

describe('udp backend between namespaces', { skip, timeout: 180_000 }, () => {
  let set: HostSet;
  let h: TestHost[];
  let a: UdpHost;
  let b: UdpHost;
  /** Current PublicIP of host b (changes in one test). */
  let bIP = '192.0.2.2';

  before(async () => {
    set = await createHosts(3, { prefix: 'ftsu', topology: 'bridge' });
    h = set.hosts;
    a = await UdpHost.start(h[0]!, { network: NETWORK, subnet: SUB[0], iface: 'eth0', publicIP: h[0]!.ip });
    b = await UdpHost.start(h[1]!, { network: NETWORK, subnet: SUB[1], iface: 'eth0', publicIP: h[1]!.ip });
    await a.add(SUB[1]!, h[1]!.ip);
    await b.add(SUB[0]!, h[0]!.ip);
    // Host 3 holds a lease but runs no backend: it plays a peer that misbehaves.
    await a.add(SUB[2]!, h[2]!.ip);
  });

  after(async () => {
    for (const x of [a, b]) if (x?.alive) await x.cmd({ op: 'stop' }).catch(() => {});
    await set?.destroy();
  });

  it('configures flannel0 as flannel does', async () => {
    const addr = await h[0]!.exec(['ip', '-4', '-o', 'addr', 'show', 'dev', 'flannel0'], { check: true });
    assert.match(addr.stdout, /inet 10\.5\.81\.0\/32/);
    const link = await h[0]!.exec(['ip', '-o', 'link', 'show', 'dev', 'flannel0'], { check: true });
    assert.match(link.stdout, /mtu 1472 .*state UNKNOWN|mtu 1472/);
    assert.match(link.stdout, /UP/);
    const route = await h[0]!.exec(['ip', 'route', 'show', 'dev', 'flannel0'], { check: true });
    assert.match(route.stdout, /^10\.5\.0\.0\/16/m);
  });

  it('two hosts ping each other through flannel0', async () => {
    const r1 = await h[0]!.exec(['ping', '-c', '3', '-i', '0.2', '-W', '2', ADDR[1]!]);
    assert.equal(r1.code, 0, r1.stdout + r1.stderr);
    assert.match(r1.stdout, / 0% packet loss/);
    assert.match(r1.stdout, /ttl=63/, 'TTL decremented once, by the sender');
    const r2 = await h[1]!.exec(['ping', '-c', '3', '-i', '0.2', '-W', '2', ADDR[0]!]);
    assert.equal(r2.code, 0, r2.stdout + r2.stderr);
    const m = await a.metrics();
    assert.ok(m.counters.sent >= 3 && m.counters.delivered >= 3, JSON.stringify(m.counters));
    assert.match(m.text, /flannel_udp_sent_packets_total \d+/);
  });

  it('a removed lease loses its route: Destination Net Unreachable, then back', async () => {
    await a.remove(SUB[1]!, bIP);
    const before = (await a.metrics()).counters;
    const r = await h[0]!.exec(['ping', '-c', '2', '-i', '0.2', '-W', '1', ADDR[1]!]);
    assert.notEqual(r.code, 0);
    assert.match(r.stdout, /From 10\.5\.0\.0 icmp_seq=\d+ Destination Net Unreachable/, r.stdout);
    const after = (await a.metrics()).counters;
    assert.ok(after.txNoRoute - before.txNoRoute >= 2);
    assert.ok(after.icmpNetUnreachable - before.icmpNetUnreachable >= 2);
    await a.add(SUB[1]!, bIP);
    const ok = await h[0]!.exec(['ping', '-c', '2', '-i', '0.2', '-W', '2', ADDR[1]!]);
    assert.equal(ok.code, 0, ok.stdout);
  });

  it("traffic follows a peer's new PublicIP", async () => {
    const newIP = '192.0.2.12';
    await h[1]!.exec(['ip', 'addr', 'del', `${bIP}/24`, 'dev', 'eth0'], { check: true });
    await addAddress(h[1]!, `${newIP}/24`);
    // Until host a learns the new address its packets go to the old one and die.
    const lost = await h[0]!.exec(['ping', '-c', '1', '-W', '1', ADDR[1]!]);
    assert.notEqual(lost.code, 0);
    await a.add(SUB[1]!, newIP);
    // Host b's daemon restarts on its new address (its socket is bound to its address, as flannel's).
    await b.cmd({ op: 'stop' });
    b = await UdpHost.start(h[1]!, { network: NETWORK, subnet: SUB[1], iface: 'eth0', publicIP: newIP });
    await b.add(SUB[0]!, h[0]!.ip);
    bIP = newIP;
    const r = await h[0]!.exec(['ping', '-c', '3', '-i', '0.2', '-W', '2', ADDR[1]!]);
    assert.equal(r.code, 0, r.stdout);
    assert.match(r.stdout, / 0% packet loss/);
  });

  it('survives 100,000 hostile datagrams during an iperf3 run and counts every one', { timeout: 120_000 }, async (t) => {
    // A second address on host 3 that holds no lease: its datagrams come from an unknown peer.
    await addAddress(h[2]!, '192.0.2.33/24');
    const server = h[1]!.spawn(['iperf3', '-s', '-1', '-B', ADDR[1]!], { stdio: 'ignore' });
    await waitFor(async () => (await h[1]!.exec(['ss', '-ltn'])).stdout.includes(`${ADDR[1]}:5201`), 5000, 'iperf3 server');
    const snmp = async () => {
      const r = await h[0]!.exec(['cat', '/proc/net/snmp']);
      const lines = r.stdout.split('\n').filter((l) => l.startsWith('Udp:'));
      const names = lines[0]!.split(/\s+/);
      const vals = lines[1]!.split(/\s+/);
      return Number(vals[names.indexOf('RcvbufErrors')]);
    };
    const before = (await a.metrics()).counters;
    const kernelBefore = await snmp();

    const client = h[0]!.exec(['iperf3', '-c', ADDR[1]!, '-t', '5', '-J'], { timeoutMs: 60_000 });
    await new Promise((r) => setTimeout(r, 500));
    const common = { target: h[0]!.ip, port: 8285, ownSubnetSrc: '10.5.99.5', victimSrc: '10.5.52.7', victimDst: '10.5.81.9', otherDst: '10.5.52.9' };
    const plan: [string, number][] = [['random', 40_000], ['truncated', 20_000], ['spoofed', 20_000], ['notlocal', 10_000]];
    const flood1 = h[2]!.exec([process.execPath, fixture('udp-flood.js'), JSON.stringify({ ...common, bind: h[2]!.ip, plan })], { timeoutMs: 90_000 });
    const flood2 = h[2]!.exec([process.execPath, fixture('udp-flood.js'), JSON.stringify({ ...common, bind: '192.0.2.33', plan: [['valid', 10_000]] })], { timeoutMs: 90_000 });
    const [c, f1, f2] = await Promise.all([client, flood1, flood2]);
    server.kill();
    assert.equal(f1.code, 0, f1.stderr);
    assert.equal(f2.code, 0, f2.stderr);
    assert.equal(c.code, 0, `iperf3 failed: ${c.stdout.slice(-500)} ${c.stderr}`);
    const bps = JSON.parse(c.stdout).end.sum_received.bits_per_second as number;
    t.diagnostic(`iperf3 during the flood: ${(bps / 1e9).toFixed(2)} Gbit/s`);
    assert.ok(bps > 10e6, `throughput ${bps}`);

    assert.ok(a.alive, 'backend still running');
    const after = await a.settledCounters();
    const d = (k: CounterName) => after[k] - before[k];
    const kernelDrops = (await snmp()) - kernelBefore;
    const ours = { malformed: d('rxMalformed'), spoofed: d('rxSpoofed'), notLocal: d('rxNotLocal'), unknown: d('rxUnknownPeer'), truncated: d('rxTruncated') };
    t.diagnostic(`drops ${JSON.stringify(ours)}, kernel receive-buffer drops ${kernelDrops}`);
    if (kernelDrops === 0) {
      assert.deepEqual(ours, { malformed: 60_000, spoofed: 20_000, notLocal: 10_000, unknown: 10_000, truncated: 0 });
    } else {
      // The kernel dropped some datagrams before we could read them (it cannot tell ours from iperf's).
      const total = ours.malformed + ours.spoofed + ours.notLocal + ours.unknown;
      assert.ok(total <= 100_000 && total + kernelDrops >= 100_000, JSON.stringify({ ours, kernelDrops }));
    }
    // Every datagram received is either delivered or counted under one reason.
    assert.equal(after.received, accountedFor(after));
  });

  it('single-stream TCP throughput (iperf3 -t 5)', { timeout: 60_000 }, async (t) => {
    const server = h[1]!.spawn(['iperf3', '-s', '-1', '-B', ADDR[1]!], { stdio: 'ignore' });
    await waitFor(async () => (await h[1]!.exec(['ss', '-ltn'])).stdout.includes(`${ADDR[1]}:5201`), 5000, 'iperf3 server');
    const rxBefore = (await b.metrics()).counters;
    const c = await h[0]!.exec(['iperf3', '-c', ADDR[1]!, '-t', '5', '-J'], { timeoutMs: 30_000 });
    server.kill();
    assert.equal(c.code, 0, c.stderr);
    const res = JSON.parse(c.stdout);
    const bps = res.end.sum_received.bits_per_second as number;
    t.diagnostic(`single-stream TCP through flannel0: ${(bps / 1e9).toFixed(2)} Gbit/s (retransmits ${res.end.sum_sent.retransmits})`);
    assert.ok(bps > 100e6, `throughput ${bps}`);
    // The receiving backend glued the stream's segments into TSO super-packets (gro.ts),
    // and still accounts for every datagram: delivered counts packets, not TUN writes.
    const rx = await b.settledCounters();
    const d = (k: CounterName) => rx[k] - rxBefore[k];
    t.diagnostic(`receiver: ${d('rxCoalescedSegments')} of ${d('delivered')} packets in ${d('rxSuperPackets')} super-packets`);
    assert.ok(d('rxSuperPackets') > 0 && d('rxCoalescedSegments') > d('rxSuperPackets'), JSON.stringify(rx));
    assert.ok(d('rxCoalescedSegments') <= d('delivered'));
    assert.equal(rx.received, accountedFor(rx));
  });

  it('stops promptly and removes flannel0', async () => {
    const t0 = Date.now();
    await a.cmd({ op: 'stop' });
    await waitFor(() => !a.alive, 5000, 'backend exit');
    assert.ok(Date.now() - t0 < 3000, `stop took ${Date.now() - t0}ms`);
    assert.equal(a.child.exitCode, 0);
    const link = await h[0]!.exec(['ip', 'link', 'show', 'dev', 'flannel0']);
    assert.notEqual(link.code, 0, 'the TUN device goes away with its fd');
  });
});
