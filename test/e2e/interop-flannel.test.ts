/**
 * Interop: one host runs flannel-ts, the other flannel's own flanneld
 * v0.19.2, with the same backend (vxlan, then udp), on one etcd (TLS
 * with client certificates: flannel v0.19 talks to etcd v3 only so). They
 * must read each other's leases and ping each other pod to pod both ways.
 * Runs when FLANNELD_REF names flannel's binary (built by
 * ../shared/tools/build-reference-flanneld.sh); skipped with a message otherwise.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHosts, run, waitFor, type HostSet } from '../helpers/netns.js';
import { startDaemon, FLANNELCTL, type DaemonProcess } from '../helpers/daemon.js';
import { startEtcd, type TestEtcd } from '../helpers/etcd.js';
import { attachPodBridge } from '../helpers/pod-bridge.js';
import { parseEnv } from '../../src/subnet/subnet-env.js';

const REF = process.env.FLANNELD_REF ?? '';
const skip = REF && existsSync(REF) ? false : 'FLANNELD_REF does not name flannel\'s flanneld v0.19.2 (build it with ../shared/tools/build-reference-flanneld.sh); interop not tested';
const P = '/coreos.com/network';

/** One host running flannel-ts (h0) and one running flannel's own flanneld (h1), on one etcd with TLS. */
interface MixedPair {
  set: HostSet;
  etcd: TestEtcd;
  dir: string;
  daemons: DaemonProcess[];
  /** Each host's subnet.env, once both daemons wrote it. */
  envs: Record<string, string>[];
}

interface MixedPairOptions {
  prefix: string;
  config: object;
  /** Give each host an IPv6 address (2001:db8:5::i+1/64) and IPv6 forwarding. */
  ipv6?: boolean;
  /** Environment of our daemon (given the pair's directory). */
  oursEnv?: (dir: string) => NodeJS.ProcessEnv;
  /** Wrapper around flannel's flanneld inside its namespace (e.g. a mount namespace of its own). */
  refWrapper?: string[];
  /** Our daemon's running line, and how long flannel's may take to write its subnet.env. */
  running?: RegExp;
  refTimeoutMs?: number;
}

/** `p` is filled in as the pair comes up, so `stopMixedPair` cleans up whatever a failing start left. */
async function startMixedPair(p: Partial<MixedPair>, o: MixedPairOptions): Promise<MixedPair> {
  const set = (p.set = await createHosts(2, { prefix: o.prefix, topology: 'bridge' }));
  const dir = (p.dir = await mkdtemp(join(tmpdir(), 'fts-ix-')));
  const daemons: DaemonProcess[] = (p.daemons = []);
  await run('ip', ['-n', set.switchNs!, 'addr', 'add', '192.0.2.254/24', 'dev', 'br0'], { check: true });
  if (o.ipv6) {
    for (const [i, h] of set.hosts.entries()) {
      await run('ip', ['-n', h.ns, '-6', 'addr', 'add', `2001:db8:5::${i + 1}/64`, 'dev', h.iface, 'nodad'], { check: true });
      await h.exec(['sysctl', '-qw', 'net.ipv6.conf.all.forwarding=1'], { check: true });
    }
  }
  const etcd = (p.etcd = await startEtcd({ netns: set.switchNs!, host: '192.0.2.254', tls: true }));
  const tls = [`--etcd-cafile=${etcd.caFile}`, `--etcd-certfile=${etcd.certFile}`, `--etcd-keyfile=${etcd.keyFile}`];
  const put = await run('ip', ['netns', 'exec', set.switchNs!, process.execPath, FLANNELCTL, `--etcd-endpoints=${etcd.endpoint}`, ...tls, 'put', `${P}/config`, JSON.stringify(o.config)]);
  assert.equal(put.code, 0, put.stderr);
  const args = (i: number) => [`--etcd-endpoints=${etcd.endpoint}`, ...tls, `--iface=${set.hosts[i]!.iface}`, `--subnet-file=${join(dir, `h${i}.env`)}`];
  daemons.push(startDaemon(args(0), { name: 'flannel-ts', prefix: ['ip', 'netns', 'exec', set.hosts[0]!.ns], ...(o.oursEnv ? { env: o.oursEnv(dir) } : {}) }));
  daemons.push(startDaemon([...args(1), '--v=1'], { name: 'flannel', prefix: ['ip', 'netns', 'exec', set.hosts[1]!.ns, ...(o.refWrapper ?? [])], program: [REF] }));
  await daemons[0]!.waitForLine(o.running ?? /running/, 30_000);
  await waitFor(() => existsSync(join(dir, 'h1.env')), o.refTimeoutMs ?? 30_000, "flannel's subnet.env");
  const envs: Record<string, string>[] = (p.envs = []);
  for (const i of [0, 1]) envs.push(parseEnv(await readFile(join(dir, `h${i}.env`), 'utf8')));
  return p as MixedPair;
}

async function stopMixedPair(p: Partial<MixedPair>): Promise<void> {
  await Promise.all((p.daemons ?? []).map((d) => d.stop('SIGKILL')));
  await p.etcd?.cleanup();
  await p.set?.destroy();
  if (p.dir) await rm(p.dir, { recursive: true, force: true });
}

/** Pod `from` pings pod `to` (by the addresses in `addr`) within 30 s, both ways. */
async function podsPingBothWays(set: HostSet, addr: string[], v6 = false): Promise<void> {
  for (const [from, to] of [[0, 1], [1, 0]] as const) {
    await waitFor(
      async () => (await set.hosts[from]!.exec(['ping', ...(v6 ? ['-6'] : []), '-c', '1', '-W', '1', '-I', addr[from]!, addr[to]!], { timeoutMs: 5000 })).code === 0,
      30_000,
      `ping${v6 ? ' -6' : ''} ${from === 0 ? 'flannel-ts -> flannel' : 'flannel -> flannel-ts'}`,
      300,
    );
  }
}

for (const [backend, mtu] of [['vxlan', '1450'], ['udp', '1472']] as const) describe(`${backend} next to flannel's own flanneld v0.19.2`, { skip, timeout: 120_000 }, () => {
  const p: Partial<MixedPair> = {};
  const pod: string[] = [];

  before(async () => {
    const { set, envs } = await startMixedPair(p, { prefix: `ftsix${backend[0]}`, config: { Network: '10.5.0.0/16', Backend: { Type: backend } } });
    for (const [i, h] of set.hosts.entries()) {
      assert.equal(envs[i]!.FLANNEL_MTU, mtu, `host ${i}: ${backend} MTU`);
      await attachPodBridge(h, envs[i]!);
      pod[i] = envs[i]!.FLANNEL_SUBNET!.split('/')[0]!;
    }
  });

  after(() => stopMixedPair(p));

  test('they ping each other pod to pod, both ways', () => podsPingBothWays(p.set!, pod));
});

/**
 * Dual-stack vxlan: flannel's flanneld v0.19.2 and ours, each with
 * flannel.1 and flannel-v6.1, reading each other's BackendData and
 * BackendV6Data; pods reach each other over IPv4 and IPv6, both ways.
 */
describe("dual-stack vxlan next to flannel's own flanneld v0.19.2", { skip, timeout: 180_000 }, () => {
  const p: Partial<MixedPair> = {};
  const pod: string[] = [];
  const pod6: string[] = [];

  before(async () => {
    const config = { Network: '10.5.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:5::/56', Backend: { Type: 'vxlan' } };
    const { set, envs } = await startMixedPair(p, { prefix: 'ftsixd', config, ipv6: true });
    for (const [i, h] of set.hosts.entries()) {
      const env = envs[i]!;
      assert.ok(env.FLANNEL_IPV6_SUBNET, `host ${i}: an IPv6 subnet in subnet.env`);
      await attachPodBridge(h, env);
      pod[i] = env.FLANNEL_SUBNET!.split('/')[0]!;
      pod6[i] = env.FLANNEL_IPV6_SUBNET!.split('/')[0]!;
    }
  });

  after(() => stopMixedPair(p));

  test('pods reach each other over IPv4 and IPv6, both ways', async () => {
    await podsPingBothWays(p.set!, pod);
    await podsPingBothWays(p.set!, pod6, true);
  });
});

/**
 * ipsec: flannel's flanneld starts its own charon with fixed /var/run paths,
 * so it runs in a mount namespace with a tmpfs of its own on /run. This
 * machine's kernel has no ESP on either side, so the check is IKE: both
 * sides load each other's connection, the IKE SA is established between
 * them, and both install flannel's three policies for the other.
 */
describe("ipsec next to flannel's own flanneld v0.19.2 (IKE; no ESP in this kernel)", { skip, timeout: 180_000 }, () => {
  const p: Partial<MixedPair> = {};
  const subnets: string[] = [];
  const psk = 'interop-psk-'.padEnd(120, 'x');

  before(async () => {
    const privateRun = ['unshare', '--mount', '--propagation', 'private', '--', 'sh', '-c', 'mount -t tmpfs flannel-run /run && exec "$0" "$@"'];
    const { envs } = await startMixedPair(p, {
      prefix: 'ftsixs',
      config: { Network: '10.5.0.0/16', Backend: { Type: 'ipsec', PSK: psk } },
      oursEnv: (dir) => ({ FLANNEL_IPSEC_ESP: 'kernel', FLANNEL_IPSEC_RUN_DIR: join(dir, 'ipsec') }),
      refWrapper: privateRun,
      running: /\[flanneld\] running$/,
      refTimeoutMs: 60_000,
    });
    for (const i of [0, 1]) subnets[i] = envs[i]!.FLANNEL_SUBNET!.replace(/\.1\//, '.0/');
  });

  after(() => stopMixedPair(p));

  test('the IKE SA is established between them and both install the three policies', async () => {
    const [h0, h1] = [p.set!.hosts[0]!, p.set!.hosts[1]!];
    const sas = () => h0.exec(['swanctl', '--list-sas', '--uri', `unix://${join(p.dir!, 'ipsec', 'charon.vici')}`], { timeoutMs: 10_000 });
    await waitFor(async () => /ESTABLISHED, IKEv2/.test((await sas()).stdout), 60_000, 'IKE SA between flannel-ts and flannel', 500);
    assert.ok((await sas()).stdout.includes(`remote '${h1.ip}' @ ${h1.ip}[`), 'the SA is with the flannel host');
    const dirs = (text: string) => (text.match(/^\s+dir (?:in|out|fwd) /gm) ?? []).length;
    for (const [h, mine, theirs, peer] of [[h0, subnets[0], subnets[1], h1.ip], [h1, subnets[1], subnets[0], h0.ip]] as const) {
      await waitFor(async () => dirs((await h.exec(['ip', 'xfrm', 'policy', 'show'])).stdout) === 3, 30_000, `policies on ${h.ns}`);
      const text = (await h.exec(['ip', 'xfrm', 'policy', 'show'])).stdout;
      assert.ok(text.includes(`src ${mine} dst ${theirs} \n\tdir out priority 0 ptype main \n\ttmpl src ${h.ip} dst ${peer}\n\t\tproto esp reqid 11 mode tunnel`), text);
    }
  });
});
