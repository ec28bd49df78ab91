/**
 * The ipsec backend end to end with real charon daemons: hosts are network
 * namespaces on a bridge, etcd runs in the bridge's namespace, each host
 * runs bin/flanneld, which starts its own charon (own run directory: own
 * strongswan.conf, pid file and VICI socket) and configures it over VICI.
 *
 * This machine's kernel has no ESP transform. Kernel ESP (flannel's way,
 * FLANNEL_IPSEC_ESP=kernel): the IKE SA comes up, flannel's three xfrm
 * policies per peer are in place, and the kernel's refusal of the SA is
 * reported. Userspace ESP (strongSwan's libipsec, what "auto" picks here):
 * real pod traffic passes, ESP in UDP on the wire.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHosts, run, waitFor, type HostSet, type TestHost } from '../helpers/netns.js';
import { startDaemon, FLANNELCTL, type DaemonProcess } from '../helpers/daemon.js';
import { startEtcd, type TestEtcd } from '../helpers/etcd.js';
import { attachPodBridge } from '../helpers/pod-bridge.js';
import { iperfRate } from '../helpers/iperf.js';
import { parseEnv } from '../../src/subnet/subnet-env.js';

const P = '/coreos.com/network';
const PSK = 'flannel-ts-e2e-'.padEnd(100, 'k');
const CHARON = '/usr/lib/ipsec/charon';

interface ICluster {
  set: HostSet;
  etcd: TestEtcd;
  dir: string;
  daemons: DaemonProcess[];
  pod: string[];
  env: NodeJS.ProcessEnv;
}

const runDir = (c: ICluster, i: number) => join(c.dir, `h${i}-ipsec`);

async function ctl(c: ICluster, args: string[]) {
  return run('ip', ['netns', 'exec', c.set.switchNs!, process.execPath, FLANNELCTL, `--etcd-endpoints=${c.etcd.endpoint}`, ...args], { timeoutMs: 20_000 });
}

function startHost(c: ICluster, i: number, env: NodeJS.ProcessEnv = {}): DaemonProcess {
  const h = c.set.hosts[i]!;
  const d = startDaemon([`--etcd-endpoints=${c.etcd.endpoint}`, `--iface=${h.iface}`, `--subnet-file=${join(c.dir, `h${i}.env`)}`, '--healthz-port=8472', '--healthz-ip=127.0.0.1'], {
    name: `h${i}`,
    prefix: ['ip', 'netns', 'exec', h.ns],
    env: { FLANNEL_IPSEC_RUN_DIR: runDir(c, i), ...c.env, ...env },
  });
  c.daemons[i] = d;
  return d;
}

async function cluster(n: number, prefix: string, config: object, env: NodeJS.ProcessEnv = {}): Promise<ICluster> {
  const set = await createHosts(n, { prefix, topology: 'bridge' });
  await run('ip', ['-n', set.switchNs!, 'addr', 'add', '192.0.2.254/24', 'dev', 'br0'], { check: true });
  const etcd = await startEtcd({ netns: set.switchNs!, host: '192.0.2.254' });
  const c: ICluster = { set, etcd, dir: await mkdtemp(join(tmpdir(), `fts-${prefix}-`)), daemons: [], pod: [], env };
  const put = await ctl(c, ['put', `${P}/config`, JSON.stringify(config)]);
  assert.equal(put.code, 0, put.stderr);
  return c;
}

async function bringUp(c: ICluster): Promise<void> {
  const ds = c.set.hosts.map((_, i) => startHost(c, i));
  await Promise.all(ds.map((d) => d.waitForLine(/\[flanneld\] running$/, 30_000)));
  for (const [i, h] of c.set.hosts.entries()) {
    const env = parseEnv(await readFile(join(c.dir, `h${i}.env`), 'utf8'));
    await attachPodBridge(h, env);
    c.pod[i] = env.FLANNEL_SUBNET!.split('/')[0]!;
  }
}

async function teardown(c: ICluster | undefined): Promise<void> {
  if (!c) return;
  await Promise.all(c.daemons.map((d) => d?.stop('SIGKILL')));
  // charon dies with its flanneld (parent-death signal); wait for it so the run directory can go.
  await waitFor(async () => (await charonPids(c.dir)).length === 0, 10_000, 'charon gone', 100).catch(() => {});
  await c.etcd.cleanup();
  await c.set.destroy();
  await rm(c.dir, { recursive: true, force: true });
}

/** charon processes whose mount namespace has a /run from under `dir` (ours, not another test's). */
async function charonPids(dir: string): Promise<number[]> {
  const r = await run('pgrep', ['-f', `^${CHARON}$`]);
  const pids: number[] = [];
  for (const p of r.stdout.split('\n').filter(Boolean).map(Number)) {
    const mounts = await readFile(`/proc/${p}/mountinfo`, 'utf8').catch(() => '');
    if (mounts.includes(dir)) pids.push(p);
  }
  return pids;
}

/** swanctl against host i's charon (the command comes first, then its options). */
const swanctl = (c: ICluster, i: number, args: string[]) => c.set.hosts[i]!.exec(['swanctl', ...args, '--uri', `unix://${join(runDir(c, i), 'charon.vici')}`], { timeoutMs: 10_000 });
const metrics = async (h: TestHost) => (await h.exec([process.execPath, '-e', "fetch('http://127.0.0.1:8472/metrics').then(r=>r.text()).then(t=>process.stdout.write(t))"], { timeoutMs: 5000 })).stdout;
const ping = (c: ICluster, from: number, to: number) => c.set.hosts[from]!.exec(['ping', '-c', '1', '-W', '1', '-I', c.pod[from]!, c.pod[to]!], { timeoutMs: 5000 });
const pingsEventually = (c: ICluster, from: number, to: number) => waitFor(async () => (await ping(c, from, to)).code === 0, 40_000, `ping h${from} -> h${to}`, 250);
const net = (pod: string) => pod.replace(/\.1$/, '.0');
const policies = async (h: TestHost) => (await h.exec(['ip', 'xfrm', 'policy', 'show'], { check: true })).stdout;
/** SPD policies (not charon's per-socket bypass entries, which show as "socket in/out"). */
const policyCount = (text: string) => (text.match(/^\s+dir (?:in|out|fwd) /gm) ?? []).length;

describe('ipsec backend, kernel ESP (flannel\'s way; this kernel has no ESP)', { timeout: 240_000 }, () => {
  let c: ICluster | undefined;
  before(async () => {
    c = await cluster(2, 'fti', { Network: '10.47.0.0/16', Backend: { Type: 'ipsec', PSK } }, { FLANNEL_IPSEC_ESP: 'kernel' });
  });
  after(() => teardown(c));

  test('IKE SA established between the hosts, three policies per peer, the refused SA reported', async () => {
    await bringUp(c!);
    const [h0, h1] = c!.set.hosts as [TestHost, TestHost];
    const [n0, n1] = [net(c!.pod[0]!), net(c!.pod[1]!)];
    // Exactly flannel's three policies on each side.
    const want0 = [
      `src ${n0}/24 dst ${n1}/24 \n\tdir out priority 0 ptype main \n\ttmpl src ${h0.ip} dst ${h1.ip}\n\t\tproto esp reqid 11 mode tunnel`,
      `src ${n1}/24 dst ${n0}/24 \n\tdir in priority 0 ptype main \n\ttmpl src ${h1.ip} dst ${h0.ip}\n\t\tproto esp reqid 11 mode tunnel`,
      `src ${n1}/24 dst ${n0}/24 \n\tdir fwd priority 0 ptype main \n\ttmpl src ${h1.ip} dst ${h0.ip}\n\t\tproto esp reqid 11 mode tunnel`,
    ];
    await waitFor(async () => policyCount(await policies(h0)) === 3, 15_000, 'h0 policies');
    const p0 = await policies(h0);
    for (const w of want0) assert.ok(p0.includes(w), `missing in h0:\n${w}\n--- have:\n${p0}`);
    await waitFor(async () => policyCount(await policies(h1)) === 3, 15_000, 'h1 policies');

    // The lease as flannel's ipsec backend writes it: BackendType only.
    const lease = await ctl(c!, ['get', `${P}/subnets/${n0}-24`]);
    assert.equal(lease.stdout.trim(), `{"PublicIP":"${h0.ip}","PublicIPv6":null,"BackendType":"ipsec"}`);
    const name0 = `${h0.ip}-${n0}/24-${n1}/24-${h1.ip}`;
    await waitFor(async () => /ESTABLISHED/.test((await swanctl(c!, 0, ['--list-sas'])).stdout), 30_000, 'IKE SA on h0', 500);
    const sas = (await swanctl(c!, 0, ['--list-sas'])).stdout;
    assert.match(sas, new RegExp(`${name0.replace(/[./]/g, '\\$&')}: #\\d+, ESTABLISHED, IKEv2`));
    assert.match((await swanctl(c!, 1, ['--list-sas'])).stdout, /ESTABLISHED, IKEv2/);
    assert.match((await swanctl(c!, 0, ['--list-conns'])).stdout, new RegExp(`${n0}/24-${n1}/24: TUNNEL`));

    // Whichever side's CHILD_SA install failed says so, with the kernel's reason.
    const failed = await Promise.race(c!.daemons.map((d) => d.waitForLine(/kernel refused to install/, 30_000)));
    assert.match(failed, /Function not implemented|Requested type not found/);
    assert.match(failed, /FLANNEL_IPSEC_ESP=userspace/);
    await waitFor(async () => /flannel_ipsec_ike_sas\{state="ESTABLISHED"\} 1/.test(await metrics(h0)), 20_000, 'metrics count the IKE SA', 500);
    const m = await metrics(h0);
    assert.match(m, /flannel_ipsec_charon_up 1/);
    assert.match(m, /flannel_ipsec_connections 1/);
    // The PSK never reaches a log line.
    for (const d of c!.daemons) assert.ok(!d.lines.some((l) => l.includes(PSK.slice(0, 40))), 'PSK in a log line');
    assert.ok(c!.daemons[0]!.lines.some((l) => /\[ipsec\/charon\]/.test(l)), "charon's lines reach our log");
  });

  test('restart after SIGKILL: charon follows, no duplicate policies; a stale flannel policy is removed', async () => {
    const h0 = c!.set.hosts[0]!;
    await c!.daemons[0]!.stop('SIGKILL');
    await waitFor(async () => (await charonPids(runDir(c!, 0))).length === 0, 10_000, 'h0 charon died with its flanneld', 100);
    // A policy flannel would have left for a peer that is gone.
    await h0.exec(['ip', 'xfrm', 'policy', 'add', 'src', '10.47.200.0/24', 'dst', `${net(c!.pod[0]!)}/24`, 'dir', 'in', 'tmpl', 'src', '192.0.2.99', 'dst', h0.ip, 'proto', 'esp', 'reqid', '11', 'mode', 'tunnel'], { check: true });
    // An operator's policy with another reqid is not ours.
    await h0.exec(['ip', 'xfrm', 'policy', 'add', 'src', '10.47.201.0/24', 'dst', `${net(c!.pod[0]!)}/24`, 'dir', 'in', 'tmpl', 'src', '192.0.2.98', 'dst', h0.ip, 'proto', 'esp', 'reqid', '77', 'mode', 'tunnel'], { check: true });
    const d = startHost(c!, 0);
    await d.waitForLine(/\[flanneld\] running$/, 30_000);
    const p = await policies(h0);
    assert.equal(policyCount(p), 4, p);
    assert.ok(!p.includes('10.47.200.0/24'), 'stale flannel policy removed');
    assert.ok(p.includes('10.47.201.0/24'), "the operator's policy stays");
    assert.equal((await charonPids(runDir(c!, 0))).length, 1, 'one charon for h0');
    await waitFor(async () => /ESTABLISHED/.test((await swanctl(c!, 0, ['--list-sas'])).stdout), 30_000, 'IKE SA again', 500);
  });

  test('a lease removed: its connection unloaded and its policies gone', async () => {
    const h0 = c!.set.hosts[0]!;
    const key = `${P}/subnets/${net(c!.pod[1]!)}-24`;
    await c!.daemons[1]!.stop('SIGTERM');
    const del = await ctl(c!, ['del', key]);
    assert.equal(del.code, 0, del.stderr);
    await waitFor(async () => policyCount(await policies(h0)) === 1, 15_000, 'h0 policies for h1 removed');
    await waitFor(async () => !/TUNNEL/.test((await swanctl(c!, 0, ['--list-conns'])).stdout), 15_000, 'connection unloaded');
    await waitFor(async () => !/ESTABLISHED/.test((await swanctl(c!, 0, ['--list-sas'])).stdout), 15_000, 'IKE SA gone');
  });
});

describe('ipsec backend, userspace ESP (strongSwan libipsec): real traffic', { timeout: 240_000 }, () => {
  let c: ICluster | undefined;
  before(async () => {
    c = await cluster(3, 'ftu', { Network: '10.48.0.0/16', Backend: { Type: 'ipsec', PSK } });
  });
  after(() => teardown(c));

  test('pods reach each other through ESP, every pair both ways; no kernel policies of ours; routes into ipsec0', async () => {
    await bringUp(c!);
    // Three hosts: each peer needs SAs of its own (libipsec picks SAs by reqid, so no shared reqid 11 here).
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) if (i !== j) await pingsEventually(c!, i, j);
    const main = (await c!.set.hosts[0]!.exec(['ip', 'route', 'show', 'dev', 'ipsec0'], { check: true })).stdout;
    for (const j of [1, 2]) assert.ok(main.includes(`${net(c!.pod[j]!)}/24`), `route to host ${j} via ipsec0:\n${main}`);
    const [h0, h1] = c!.set.hosts as [TestHost, TestHost];
    assert.ok(c!.daemons[0]!.lines.some((l) => /using strongSwan userspace ESP/.test(l)));
    assert.equal(policyCount(await policies(h0)), 0);
    // On the wire: ESP in UDP 4500, no bare ICMP between the pod addresses.
    // ESP in UDP 4500 only: IKE shares the port (its packets start with four zero bytes), and with
    // three hosts IKE traffic (a CHILD_SA asked for again, DPD) may come first.
    const cap = h1.spawn(['tcpdump', '-l', '-n', '-i', h1.iface, '-c', '4', 'icmp or (udp port 4500 and udp[8:4] != 0)']);
    let out = '';
    let err = '';
    cap.stdout?.on('data', (b: Buffer) => (out += b.toString()));
    cap.stderr?.on('data', (b: Buffer) => (err += b.toString()));
    // tcpdump says when it listens; only then is the first ping sure to be seen.
    await waitFor(() => /listening on/.test(err), 10_000, 'tcpdump listening');
    await h0.exec(['ping', '-c', '3', '-i', '0.2', '-I', c!.pod[0]!, c!.pod[1]!], { timeoutMs: 5000 });
    await waitFor(() => /ESP\(spi=/.test(out), 5000, 'ESP on the wire');
    cap.kill();
    assert.ok(!/ICMP echo/.test(out), out);
    await waitFor(async () => /flannel_ipsec_child_sas\{state="INSTALLED"\} [1-9]/.test(await metrics(h0)), 20_000, 'metrics count the CHILD_SA', 500);
  });

  test('iperf3 through the tunnel', async () => {
    const [h0, h1] = c!.set.hosts as [TestHost, TestHost];
    const bps = await iperfRate(h0, c!.pod[0]!, h1, c!.pod[1]!, 2);
    assert.ok(bps > 1e6, `iperf3 ${bps} bit/s`);
  });

  test('charon killed: restarted, connections reloaded, traffic back', async () => {
    const [pid] = await charonPids(runDir(c!, 0));
    assert.ok(pid);
    process.kill(pid!, 'SIGKILL');
    await c!.daemons[0]!.waitForLine(/charon exited, restarting it/, 10_000);
    await c!.daemons[0]!.waitForLine(/reloading|charon configuration updated/, 20_000);
    await waitFor(async () => (await charonPids(runDir(c!, 0))).length === 1, 10_000, 'one charon again');
    await pingsEventually(c!, 0, 1);
    await waitFor(async () => /flannel_ipsec_charon_restarts_total 1/.test(await metrics(c!.set.hosts[0]!)), 10_000, 'restart counted');
  });
});

describe('ipsec backend: bad input', { timeout: 120_000 }, () => {
  let c: ICluster | undefined;
  before(async () => {
    c = await cluster(1, 'ftb', { Network: '10.49.0.0/16', Backend: { Type: 'ipsec', PSK: 'short-secret-psk' } });
  });
  after(() => teardown(c));

  async function expectExit(env: NodeJS.ProcessEnv, message: RegExp): Promise<DaemonProcess> {
    const d = startHost(c!, 0, env);
    assert.equal(await d.exited, 1, d.lines.join('\n'));
    assert.ok(d.lines.some((l) => message.test(l)), `no line matching ${message}:\n${d.lines.join('\n')}`);
    assert.equal((await charonPids(runDir(c!, 0))).length, 0, 'no charon left');
    assert.equal(policyCount(await policies(c!.set.hosts[0]!)), 0, 'no policies');
    assert.equal((await ctl(c!, ['get', '--prefix', `${P}/subnets/`])).stdout, '', 'no lease taken');
    return d;
  }

  test('a short PSK: one clear error, exit 1, the PSK not printed', async () => {
    const d = await expectExit({}, /PSK is too short: 16 characters, at least 96 needed/);
    assert.ok(!d.lines.some((l) => l.includes('short-secret-psk')));
  });

  test('an unknown ESP proposal: charon\'s refusal named with the option, exit 1', async () => {
    await ctl(c!, ['put', `${P}/config`, JSON.stringify({ Network: '10.49.0.0/16', Backend: { Type: 'ipsec', PSK, ESPProposal: 'aes999-nosuchalg' } })]);
    const d = await expectExit({}, /ESPProposal "aes999-nosuchalg" refused by charon/);
    assert.ok(d.lines.some((l) => /\[ipsec\/charon\].*aes999/.test(l) || /invalid value/.test(l)), "charon's own words reach the log");
  });

  test('charon missing: one clear error, exit 1', async () => {
    await ctl(c!, ['put', `${P}/config`, JSON.stringify({ Network: '10.49.0.0/16', Backend: { Type: 'ipsec', PSK } })]);
    await expectExit({ FLANNEL_IPSEC_CHARON: join(c!.dir, 'no-such-charon') }, /charon not found at .*no-such-charon.*install strongswan-charon/);
  });
});

/**
 * Hostile lease text (issue 24 item 2) under ipsec: before, a PublicIP with
 * a vertical tab made the xfrm batch abort the whole reconcile before
 * charon got any connection, so every peer was left without policies
 * (traffic in clear). Now the hostile leases are refused and counted, and
 * the legitimate peer gets its three policies and its IKE SA.
 */
describe('ipsec backend, kernel ESP: hostile leases in the store', { timeout: 180_000 }, () => {
  let c: ICluster | undefined;
  before(async () => {
    c = await cluster(2, 'ftih', { Network: '10.48.0.0/16', Backend: { Type: 'ipsec', PSK } }, { FLANNEL_IPSEC_ESP: 'kernel' });
    for (const [i, ip] of ['192.0.2.7\u000b', '192.0.2.8\n', '192.0.2.9 ', '192.0.2.10 dev lo'].entries()) {
      assert.equal((await ctl(c, ['put', `${P}/subnets/10.48.${240 + i}.0-24`, JSON.stringify({ PublicIP: ip, PublicIPv6: null })])).code, 0);
    }
  });
  after(() => teardown(c));

  test('the legitimate peer gets its policies and IKE SA; the hostile leases are refused and counted', async () => {
    await bringUp(c!);
    const [h0] = c!.set.hosts as [TestHost, TestHost];
    await waitFor(async () => /ESTABLISHED/.test((await swanctl(c!, 0, ['--list-sas'])).stdout), 30_000, 'IKE SA on h0', 500);
    for (const h of c!.set.hosts) {
      const text = await policies(h);
      assert.equal(policyCount(text), 3, text);
      assert.ok(!/10\.48\.24\d\./.test(text), text);
    }
    const conns = (await swanctl(c!, 0, ['--list-conns'])).stdout;
    assert.ok(!/192\.0\.2\.(7|8|9|10)\b/.test(conns), conns);
    const m = await metrics(h0);
    assert.match(m, /flannel_subnet_leases_rejected_total\{reason="malformed_public_ip"\} 4/);
    assert.ok(!c!.daemons.some((d) => d.lines.some((l) => /kernel state change failed|kernel state entry refused/.test(l))), 'no line reached iproute2 and failed');
  });

  test('a second flanneld given the same run dir stops with one line naming FLANNEL_IPSEC_RUN_DIR; the first one\'s charon lives on', async () => {
    const h0 = c!.set.hosts[0]!;
    const pidBefore = (await readFile(join(runDir(c!, 0), 'charon.pid'), 'utf8')).trim();
    const second = startDaemon([`--etcd-endpoints=${c!.etcd.endpoint}`, `--iface=${h0.iface}`, `--subnet-file=${join(c!.dir, 'h0-second.env')}`], {
      name: 'h0-second',
      prefix: ['ip', 'netns', 'exec', h0.ns],
      env: { FLANNEL_IPSEC_RUN_DIR: runDir(c!, 0), FLANNEL_IPSEC_ESP: 'kernel' },
    });
    const code = await second.exited;
    assert.notEqual(code, 0);
    assert.ok(second.lines.some((l) => /ERROR .*ipsec run directory .* is in use by another running flanneld .*FLANNEL_IPSEC_RUN_DIR/.test(l)), second.lines.join('\n'));
    assert.equal((await readFile(join(runDir(c!, 0), 'charon.pid'), 'utf8')).trim(), pidBefore, 'the same charon');
    assert.ok(c!.daemons[0]!.alive);
    assert.match((await swanctl(c!, 0, ['--list-sas'])).stdout, /ESTABLISHED/);
  });
});
