/**
 * Kubernetes mode end to end against a real kube-apiserver (v1.20.2 with
 * etcd, RBAC, ServiceAccount tokens). Nodes are network namespaces on a
 * bridge; the API server runs in the bridge's namespace. deploy/kube-flannel.yml
 * is applied with kubectl, and each daemon runs as the DaemonSet runs it:
 * --kube-subnet-mgr --ip-masq, the ConfigMap's net-conf.json, in-cluster
 * config with a TokenRequest token of the manifest's ServiceAccount, the
 * node found from NODE_NAME (or POD_NAME + POD_NAMESPACE). Pods are real
 * CNI pods: Debian's bridge + host-local, given the delegate config
 * flannel's CNI plugin builds from subnet.env.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHosts, registerCleanup, run, waitFor, type HostSet, type TestHost } from '../helpers/netns.js';
import { REPO_ROOT, startDaemon, type DaemonProcess } from '../helpers/daemon.js';
import { createNode, getNode, KUBE_SKIP_MESSAGE, kubeBinDir, mintToken, startKube, writeServiceAccountDir, type TestKube } from '../helpers/kube.js';
import { parseEnv } from '../../src/subnet/subnet-env.js';

const PREFIX = 'flannel.alpha.coreos.com';
const API_IP = '192.0.2.254';
const MANIFEST = join(REPO_ROOT, 'deploy', 'kube-flannel.yml');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Cluster {
  set: HostSet;
  k: TestKube;
  dir: string;
  daemons: (DaemonProcess | undefined)[];
  pods: { ns: string; ip: string }[];
}

const nodeName = (i: number) => `n${i + 1}`;
const saDir = (c: Cluster, i: number) => join(c.dir, `sa-h${i}`);
const envFile = (c: Cluster, i: number) => join(c.dir, `h${i}.env`);

/**
 * FLANNEL_TEST_IMAGE=<image> runs every flanneld of this file from that
 * image (scripts/build-image.sh builds it): a podman container joined to
 * the node's network namespace with the DaemonSet's capabilities.
 */
const IMAGE = process.env.FLANNEL_TEST_IMAGE;

function startNode(c: Cluster, i: number, o: { netConf?: string; env?: NodeJS.ProcessEnv; args?: string[] } = {}): DaemonProcess {
  const h = c.set.hosts[i]!;
  // Host 0 finds its node as a DaemonSet pod does (POD_NAME + POD_NAMESPACE, a GET of the pod); the others from NODE_NAME.
  const who: Record<string, string> = i === 0 ? { POD_NAME: 'kube-flannel-ds-h0', POD_NAMESPACE: 'kube-flannel' } : { NODE_NAME: nodeName(i) };
  const args = ['--kube-subnet-mgr', '--ip-masq', `--net-config-path=${o.netConf ?? join(c.dir, 'net-conf.json')}`, `--subnet-file=${envFile(c, i)}`, '--healthz-port=8081', `--iface=${h.iface}`, ...(o.args ?? [])];
  const env: Record<string, string> = {
    KUBERNETES_SERVICE_HOST: API_IP,
    KUBERNETES_SERVICE_PORT: '16443',
    FLANNEL_KUBE_SERVICE_ACCOUNT_DIR: saDir(c, i),
    WIREGUARD_KEY_FILE: join(c.dir, `wg-h${i}.key`),
    FLANNEL_WIREGUARD_SOCKET_DIR: join(c.dir, `wg-h${i}`),
    ...who,
    ...(o.env as Record<string, string>),
  };
  const d = IMAGE
    ? startDaemon(args, {
        name: `h${i}`,
        program: [
          'podman', '--runtime', 'runc', '--cgroup-manager=cgroupfs', 'run', '--rm', '--name', `fts-kube-h${i}-${process.pid}`,
          `--network=ns:/run/netns/${h.ns}`, '--cap-drop=all', '--cap-add=NET_ADMIN', '--cap-add=NET_RAW', '--device=/dev/net/tun',
          '--ulimit=nofile=1024:1024', '--ulimit=nproc=1024:1024', `--volume=${c.dir}:${c.dir}`,
          ...Object.entries(env).map(([k, v]) => `--env=${k}=${v}`),
          IMAGE,
        ],
      })
    : startDaemon(args, { name: `h${i}`, prefix: ['ip', 'netns', 'exec', h.ns], env });
  c.daemons[i] = d;
  return d;
}

async function readyz(h: TestHost): Promise<{ code: number; body: string }> {
  const r = await h.exec(['curl', '-sS', '-w', '\n%{http_code}', 'http://127.0.0.1:8081/readyz'], { timeoutMs: 5000 });
  const nl = r.stdout.lastIndexOf('\n');
  return { code: Number(r.stdout.slice(nl + 1)), body: r.stdout.slice(0, nl) };
}

async function metrics(h: TestHost): Promise<string> {
  return (await h.exec(['curl', '-sS', 'http://127.0.0.1:8081/metrics'], { timeoutMs: 5000 })).stdout;
}

/**
 * A pod on host i, made as kubelet + flannel's CNI plugin make one: a
 * network namespace, and Debian's bridge plugin run with the delegate
 * config flannel's plugin writes for this subnet.env (hairpin, default
 * gateway, ipMasq off because flanneld masquerades, host-local over the
 * node's subnet, a route to the whole Network).
 */
async function addPod(c: Cluster, i: number): Promise<{ ns: string; ip: string }> {
  const h = c.set.hosts[i]!;
  const env = parseEnv(await readFile(envFile(c, i), 'utf8'));
  const podNs = `${h.ns}-pod`;
  await run('ip', ['netns', 'add', podNs], { check: true });
  registerCleanup(() => void run('ip', ['netns', 'del', podNs]));
  const subnet = env.FLANNEL_SUBNET!.replace(/\.1\//, '.0/');
  const delegate = {
    cniVersion: '0.3.1',
    name: 'cbr0',
    type: 'bridge',
    hairpinMode: true,
    isDefaultGateway: true,
    isGateway: true,
    ipMasq: env.FLANNEL_IPMASQ !== 'true',
    mtu: Number(env.FLANNEL_MTU),
    // dataDir: one host-local store per simulated node (they share this machine's /var/lib/cni).
    ipam: { type: 'host-local', dataDir: join(c.dir, `ipam-h${i}`), ranges: [[{ subnet }]], routes: [{ dst: env.FLANNEL_NETWORK }] },
  };
  const r = await run('ip', ['netns', 'exec', h.ns, 'env', 'CNI_COMMAND=ADD', `CNI_CONTAINERID=pod-h${i}`, `CNI_NETNS=/run/netns/${podNs}`, 'CNI_IFNAME=eth0', 'CNI_PATH=/usr/lib/cni', '/usr/lib/cni/bridge'], {
    input: JSON.stringify(delegate),
    timeoutMs: 20_000,
  });
  assert.equal(r.code, 0, `CNI ADD on h${i}: ${r.stdout} ${r.stderr}`);
  const result = JSON.parse(r.stdout) as { ips: { address: string }[] };
  return { ns: podNs, ip: result.ips[0]!.address.split('/')[0]! };
}

const podPing = (c: Cluster, from: number, to: number) => run('ip', ['netns', 'exec', c.pods[from]!.ns, 'ping', '-c', '1', '-W', '1', c.pods[to]!.ip], { timeoutMs: 5000 });
async function podPingsEventually(c: Cluster, from: number, to: number, timeoutMs = 20_000): Promise<void> {
  await waitFor(async () => (await podPing(c, from, to)).code === 0, timeoutMs, `pod ping h${from} -> h${to}`, 200);
}
async function podPingMatrix(c: Cluster, hosts: number[]): Promise<void> {
  for (const i of hosts) for (const j of hosts) if (i !== j) await podPingsEventually(c, i, j);
}

const show = async (h: TestHost, args: string[]) => (await h.exec(args, { check: true })).stdout;
async function vxlanStateFor(h: TestHost, subnet: string, gw: string): Promise<{ route: boolean; neigh: boolean }> {
  const route = (await show(h, ['ip', '-4', 'route', 'show', subnet])).includes('flannel.1');
  const neigh = (await show(h, ['ip', 'neigh', 'show', 'dev', 'flannel.1'])).includes(`${gw} `);
  return { route, neigh };
}

const bin = kubeBinDir();

describe('Kubernetes mode against a real kube-apiserver', { skip: bin ? false : KUBE_SKIP_MESSAGE, concurrency: false }, () => {
  let c: Cluster | undefined;

  before(async () => {
    const set = await createHosts(3, { prefix: 'fk', topology: 'bridge' });
    await run('ip', ['-n', set.switchNs!, 'addr', 'add', `${API_IP}/24`, 'dev', 'br0'], { check: true });
    const dir = await mkdtemp(join(tmpdir(), 'fts-kube-'));
    const k = await startKube(join(dir, 'kube'), set.switchNs!, API_IP);
    c = { set, k, dir, daemons: [], pods: [] };
    const applied = await k.kubectl(['apply', '-f', MANIFEST]);
    assert.equal(applied.code, 0, applied.stderr);
    // The net-conf.json the DaemonSet mounts, taken from the applied ConfigMap.
    const cm = await k.api('GET', '/api/v1/namespaces/kube-flannel/configmaps/kube-flannel-cfg');
    await writeFile(join(dir, 'net-conf.json'), cm.body.data['net-conf.json']);
    await createNode(k, 'n1', ['10.244.1.0/24'], '192.0.2.1');
    await createNode(k, 'n2', ['10.244.2.0/24'], '192.0.2.2');
    await createNode(k, 'n3', [], '192.0.2.3');
    // The DaemonSet's pod on n1, which host 0 finds its node through.
    const pod = await k.api('POST', '/api/v1/namespaces/kube-flannel/pods', {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'kube-flannel-ds-h0', namespace: 'kube-flannel' },
      spec: { nodeName: 'n1', serviceAccountName: 'flannel', automountServiceAccountToken: false, hostNetwork: true, containers: [{ name: 'kube-flannel', image: 'flannel-ts:0.1.0' }] },
    });
    assert.equal(pod.status, 201, JSON.stringify(pod.body));
    for (let i = 0; i < 3; i++) await writeServiceAccountDir(k, saDir(c, i), await mintToken(k, 'kube-flannel', 'flannel', `tok-h${i}`));
  });

  after(async () => {
    if (!c) return;
    await Promise.all(c.daemons.map((d) => d?.stop('SIGKILL')));
    for (const p of c.pods) await run('ip', ['netns', 'del', p.ns]);
    await c.k.stop();
    await c.set.destroy();
    await rm(c.dir, { recursive: true, force: true });
  });

  test('a missing RBAC permission is named and waited for; granting it lets the daemon start', async () => {
    // The test API server's user "flannel" has no bindings at all.
    const kc = (await readFile(join(c!.k.dir, 'kubeconfig-flannel'), 'utf8'));
    await writeFile(join(c!.dir, 'kubeconfig-unbound'), kc);
    const d = startNode(c!, 1, { env: { KUBERNETES_SERVICE_HOST: '', KUBERNETES_SERVICE_PORT: '' }, args: [`--kubeconfig-file=${join(c!.dir, 'kubeconfig-unbound')}`] });
    try {
      await d.waitForLine(/RBAC: this ServiceAccount may not list nodes/, 20_000);
      await d.waitForLine(/RBAC: this ServiceAccount may not patch nodes\/status/, 5000);
      await waitFor(async () => /RBAC/.test((await readyz(c!.set.hosts[1]!)).body), 10_000, 'readyz names RBAC');
      assert.equal((await readyz(c!.set.hosts[1]!)).code, 503);
      const bind = await c!.k.kubectl(['create', 'clusterrolebinding', 'flannel-user', '--clusterrole=flannel', '--user=flannel']);
      assert.equal(bind.code, 0, bind.stderr);
      await d.waitForLine(/ running/, 60_000);
      assert.equal((await readyz(c!.set.hosts[1]!)).code, 200);
    } finally {
      await d.stop();
    }
  });

  test('three nodes (one waiting for its podCIDR) publish flannel\'s annotations and condition; CNI pods reach each other', async () => {
    const d0 = startNode(c!, 0);
    const d1 = startNode(c!, 1);
    const d2 = startNode(c!, 2);
    await Promise.all([d0.waitForLine(/ running/, 30_000), d1.waitForLine(/ running/, 30_000)]);
    // n3 has no podCIDR yet: its daemon waits, alive but not ready, and says why.
    await d2.waitForLine(/no podCIDR yet/, 20_000);
    await waitFor(async () => /podCIDR/.test((await readyz(c!.set.hosts[2]!)).body), 10_000, 'readyz names the podCIDR');
    assert.equal((await readyz(c!.set.hosts[2]!)).code, 503);
    const assigned = await c!.k.api('PATCH', '/api/v1/nodes/n3', { spec: { podCIDR: '10.244.3.0/24', podCIDRs: ['10.244.3.0/24'] } }, 'application/strategic-merge-patch+json');
    assert.equal(assigned.status, 200, JSON.stringify(assigned.body));
    await d2.waitForLine(/ running/, 30_000);
    await waitFor(async () => (await readyz(c!.set.hosts[2]!)).code === 200, 10_000, 'h2 ready');

    for (let i = 0; i < 3; i++) {
      const node = await waitFor(async () => {
        const n = await getNode(c!.k, nodeName(i));
        return n?.status?.conditions?.some((x: { type: string }) => x.type === 'NetworkUnavailable') ? n : null;
      }, 15_000, `n${i + 1} condition`);
      const a = node.metadata.annotations as Record<string, string>;
      const ours = Object.fromEntries(Object.entries(a).filter(([k]) => k.startsWith(`${PREFIX}/`)));
      assert.deepEqual(Object.keys(ours).sort(), [`${PREFIX}/backend-data`, `${PREFIX}/backend-type`, `${PREFIX}/kube-subnet-manager`, `${PREFIX}/public-ip`]);
      assert.match(ours[`${PREFIX}/backend-data`]!, /^\{"VNI":1,"VtepMAC":"[0-9a-f]{2}(:[0-9a-f]{2}){5}"\}$/);
      assert.equal(ours[`${PREFIX}/backend-type`], 'vxlan');
      assert.equal(ours[`${PREFIX}/kube-subnet-manager`], 'true');
      assert.equal(ours[`${PREFIX}/public-ip`], `192.0.2.${i + 1}`);
      const cond = node.status.conditions.find((x: { type: string }) => x.type === 'NetworkUnavailable');
      assert.equal(cond.status, 'False');
      assert.equal(cond.reason, 'FlannelIsUp');
      assert.equal(cond.message, 'Flannel is running on this node');
      const env = parseEnv(await readFile(envFile(c!, i), 'utf8'));
      assert.deepEqual(env, { FLANNEL_NETWORK: '10.244.0.0/16', FLANNEL_SUBNET: `10.244.${i + 1}.1/24`, FLANNEL_MTU: '1450', FLANNEL_IPMASQ: 'true' });
    }
    for (let i = 0; i < 3; i++) c!.pods[i] = await addPod(c!, i);
    await podPingMatrix(c!, [0, 1, 2]);
  });

  test('malformed annotations on another node are skipped with one line each and counted; the daemons go on', async () => {
    const bad: [string, string, Record<string, string>][] = [
      ['bad-ip', '10.244.11.0/24', { 'public-ip': '192.0.2.7 dev lo' }],
      ['bad-data', '10.244.12.0/24', { 'backend-data': 'not json' }],
      ['bad-type', '10.244.13.0/24', { 'backend-type': 'host-gw' }],
      ['no-annotations', '10.244.14.0/24', {}],
    ];
    for (const [name, cidr, override] of bad) {
      await createNode(c!.k, name, [cidr], '192.0.2.99');
      if (name === 'no-annotations') continue;
      const annotations = { 'kube-subnet-manager': 'true', 'backend-type': 'vxlan', 'backend-data': '{"VNI":1,"VtepMAC":"02:00:00:00:00:07"}', 'public-ip': '192.0.2.99', ...override };
      const r = await c!.k.api('PATCH', `/api/v1/nodes/${name}/status`, { metadata: { annotations: Object.fromEntries(Object.entries(annotations).map(([k, v]) => [`${PREFIX}/${k}`, v])) } }, 'application/strategic-merge-patch+json');
      assert.equal(r.status, 200);
    }
    const d0 = c!.daemons[0]!;
    await d0.waitForLine(/skipping node .*node\/bad-ip.*malformed_public_ip/, 15_000);
    await d0.waitForLine(/skipping node .*node\/bad-data.*malformed_backend_data/, 15_000);
    await d0.waitForLine(/skipping node .*node\/bad-type.*other_backend_type/, 15_000);
    const m = await metrics(c!.set.hosts[0]!);
    assert.match(m, /flannel_subnet_leases_rejected_total\{reason="malformed_public_ip"\} 1/);
    assert.match(m, /flannel_subnet_leases_rejected_total\{reason="malformed_backend_data"\} 1/);
    assert.match(m, /flannel_subnet_leases_rejected_total\{reason="other_backend_type"\} 1/);
    assert.match(m, /flannel_subnet_leases 2\n/);
    assert.equal((await show(c!.set.hosts[0]!, ['ip', '-4', 'route', 'show', '10.244.11.0/24'])).trim(), '');
    for (const d of c!.daemons) assert.ok(d!.alive);
    for (const [name] of bad) assert.equal((await c!.k.api('DELETE', `/api/v1/nodes/${name}`)).status, 200);
    await podPingsEventually(c!, 0, 1);
  });

  test('a deleted node takes its route, FDB entry and neighbour with it', async () => {
    const h0 = c!.set.hosts[0]!;
    const mac = JSON.parse((await getNode(c!.k, 'n3')).metadata.annotations[`${PREFIX}/backend-data`]).VtepMAC as string;
    assert.deepEqual(await vxlanStateFor(h0, '10.244.3.0/24', '10.244.3.0'), { route: true, neigh: true });
    assert.equal((await c!.k.api('DELETE', '/api/v1/nodes/n3')).status, 200);
    await waitFor(async () => !(await vxlanStateFor(h0, '10.244.3.0/24', '10.244.3.0')).route, 15_000, 'route to n3 removed');
    assert.deepEqual(await vxlanStateFor(h0, '10.244.3.0/24', '10.244.3.0'), { route: false, neigh: false });
    assert.ok(!(await show(h0, ['bridge', 'fdb', 'show', 'dev', 'flannel.1'])).includes(mac));
    await c!.daemons[2]!.waitForLine(/this node was deleted/, 10_000);
    // The node comes back (as a kubelet re-registers); its daemon, restarted, publishes again with the same VtepMAC.
    await c!.daemons[2]!.stop();
    await createNode(c!.k, 'n3', ['10.244.3.0/24'], '192.0.2.3');
    await startNode(c!, 2).waitForLine(/ running/, 30_000);
    const again = JSON.parse((await getNode(c!.k, 'n3')).metadata.annotations[`${PREFIX}/backend-data`]).VtepMAC as string;
    assert.equal(again, mac, 'VtepMAC kept across the restart');
    await podPingsEventually(c!, 0, 2);
  });

  test('the VtepMAC is kept across a restart from the node\'s own backend-data, even when the device is gone', async () => {
    const mac = JSON.parse((await getNode(c!.k, 'n2')).metadata.annotations[`${PREFIX}/backend-data`]).VtepMAC as string;
    await c!.daemons[1]!.stop();
    await c!.set.hosts[1]!.exec(['ip', 'link', 'del', 'flannel.1'], { check: true });
    await startNode(c!, 1).waitForLine(/ running/, 30_000);
    const link = await show(c!.set.hosts[1]!, ['ip', '-o', 'link', 'show', 'dev', 'flannel.1']);
    assert.ok(link.includes(`link/ether ${mac}`), link);
    assert.equal(JSON.parse((await getNode(c!.k, 'n2')).metadata.annotations[`${PREFIX}/backend-data`]).VtepMAC, mac);
    await podPingsEventually(c!, 0, 1);
  });

  test('a node deleted while the other daemons were stopped is cleaned up at their next start', async () => {
    await Promise.all([c!.daemons[0]!.stop(), c!.daemons[1]!.stop(), c!.daemons[2]!.stop()]);
    // Stopping keeps the kernel state, as flannel does.
    assert.equal((await vxlanStateFor(c!.set.hosts[0]!, '10.244.3.0/24', '10.244.3.0')).route, true);
    assert.equal((await c!.k.api('DELETE', '/api/v1/nodes/n3')).status, 200);
    await Promise.all([startNode(c!, 0).waitForLine(/ running/, 30_000), startNode(c!, 1).waitForLine(/ running/, 30_000)]);
    for (const i of [0, 1]) {
      assert.deepEqual(await vxlanStateFor(c!.set.hosts[i]!, '10.244.3.0/24', '10.244.3.0'), { route: false, neigh: false }, `h${i}`);
    }
    await podPingsEventually(c!, 0, 1);
    await podPingsEventually(c!, 1, 0);
    await createNode(c!.k, 'n3', ['10.244.3.0/24'], '192.0.2.3');
    await startNode(c!, 2).waitForLine(/ running/, 30_000);
    await podPingMatrix(c!, [0, 1, 2]);
  });

  test('the API server stopped for 20 s: routes kept and traffic flows; a rotated token is re-read; the watch resumes', async () => {
    // Rotate: new tokens in the ServiceAccount files, the old ones revoked (their Secret deleted).
    for (const i of [0, 1, 2]) {
      const old = (await readFile(join(saDir(c!, i), 'token'), 'utf8')).trim();
      await writeFile(join(saDir(c!, i), 'token'), await mintToken(c!.k, 'kube-flannel', 'flannel', `tok2-h${i}`));
      assert.equal((await c!.k.api('DELETE', `/api/v1/namespaces/kube-flannel/secrets/tok-h${i}`)).status, 200);
      const probe = await run('ip', ['netns', 'exec', c!.k.ns, 'curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}', '--cacert', c!.k.caFile, '-H', `Authorization: Bearer ${old}`, `${c!.k.server}/api/v1/nodes`]);
      await waitFor(async () => (await run('ip', ['netns', 'exec', c!.k.ns, 'curl', '-sS', '-o', '/dev/null', '-w', '%{http_code}', '--cacert', c!.k.caFile, '-H', `Authorization: Bearer ${old}`, `${c!.k.server}/api/v1/nodes`])).stdout === '401', 15_000, `old token of h${i} revoked (was ${probe.stdout})`);
    }
    await c!.k.stop();
    await sleep(20_000);
    for (const d of c!.daemons) assert.ok(d!.alive, 'daemons keep running without the API server');
    assert.equal((await vxlanStateFor(c!.set.hosts[0]!, '10.244.2.0/24', '10.244.2.0')).route, true);
    assert.equal((await podPing(c!, 0, 1)).code, 0, 'traffic flows while the API server is down');
    await c!.k.start();
    // A node joining now reaches every daemon only through a resumed watch.
    await createNode(c!.k, 'n9', ['10.244.9.0/24'], '192.0.2.9');
    const annotations = { 'kube-subnet-manager': 'true', 'backend-type': 'vxlan', 'backend-data': '{"VNI":1,"VtepMAC":"02:00:00:00:00:09"}', 'public-ip': '192.0.2.9' };
    const r = await c!.k.api('PATCH', '/api/v1/nodes/n9/status', { metadata: { annotations: Object.fromEntries(Object.entries(annotations).map(([k, v]) => [`${PREFIX}/${k}`, v])) } }, 'application/strategic-merge-patch+json');
    assert.equal(r.status, 200);
    for (const i of [0, 1, 2]) {
      await waitFor(async () => (await vxlanStateFor(c!.set.hosts[i]!, '10.244.9.0/24', '10.244.9.0')).route, 60_000, `h${i} learns n9 after the outage`);
    }
    assert.equal((await c!.k.api('DELETE', '/api/v1/nodes/n9')).status, 200);
    await podPingMatrix(c!, [0, 1, 2]);
  });

  test('public-ip-overwrite on the own node is published without a restart', async () => {
    const r = await c!.k.api('PATCH', '/api/v1/nodes/n2', { metadata: { annotations: { [`${PREFIX}/public-ip-overwrite`]: '192.0.2.22' } } }, 'application/strategic-merge-patch+json');
    assert.equal(r.status, 200);
    await waitFor(async () => (await getNode(c!.k, 'n2')).metadata.annotations[`${PREFIX}/public-ip`] === '192.0.2.22', 15_000, 'n2 publishes the overwrite');
    await waitFor(async () => (await show(c!.set.hosts[0]!, ['bridge', 'fdb', 'show', 'dev', 'flannel.1'])).includes('dst 192.0.2.22'), 15_000, 'h0 follows n2\'s new public-ip');
    // Back to the found address.
    const back = await c!.k.api('PATCH', '/api/v1/nodes/n2', { metadata: { annotations: { [`${PREFIX}/public-ip-overwrite`]: null } } }, 'application/strategic-merge-patch+json');
    assert.equal(back.status, 200);
    await waitFor(async () => (await getNode(c!.k, 'n2')).metadata.annotations[`${PREFIX}/public-ip`] === '192.0.2.2', 15_000, 'n2 publishes its own address again');
    await podPingsEventually(c!, 0, 1);
  });

  test('interop: flannel\'s own flanneld v0.19.2 as node n3 among two of ours, vxlan pods reaching each other both ways', { skip: process.env.FLANNELD_REF ? false : 'FLANNELD_REF is not set: build flannel\'s flanneld with ../shared/tools/build-reference-flanneld.sh and point FLANNELD_REF at it' }, async () => {
    await c!.daemons[2]!.stop();
    const h2 = c!.set.hosts[2]!;
    // flannel's flanneld reads a kubeconfig (or the fixed in-cluster paths): the same ServiceAccount token, as a kubeconfig.
    const token = (await readFile(join(saDir(c!, 2), 'token'), 'utf8')).trim();
    const ca = (await readFile(c!.k.caFile)).toString('base64');
    const kubeconfig = join(c!.dir, 'kubeconfig-ref');
    await writeFile(
      kubeconfig,
      `apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: ${c!.k.server}\n    certificate-authority-data: ${ca}\nusers:\n- name: u\n  user:\n    token: ${token}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: u\ncurrent-context: t\n`,
      { mode: 0o600 },
    );
    const macBefore = JSON.parse((await getNode(c!.k, 'n3')).metadata.annotations[`${PREFIX}/backend-data`]).VtepMAC as string;
    // A node flannel's daemon sets up from scratch: it must learn our nodes' routes from their annotations, and ours its new VtepMAC.
    await h2.exec(['ip', 'link', 'del', 'flannel.1'], { check: true });
    const ref = startDaemon(
      ['--kube-subnet-mgr', `--kubeconfig-file=${kubeconfig}`, `--net-config-path=${join(c!.dir, 'net-conf.json')}`, `--subnet-file=${envFile(c!, 2)}`, `--iface=${h2.iface}`, '--ip-masq'],
      { name: 'ref', prefix: ['ip', 'netns', 'exec', h2.ns], program: [process.env.FLANNELD_REF!], env: { NODE_NAME: 'n3' } },
    );
    c!.daemons[2] = ref;
    try {
      await ref.waitForLine(/Running backend/, 30_000);
      const macRef = await waitFor(async () => {
        const m = JSON.parse((await getNode(c!.k, 'n3')).metadata.annotations[`${PREFIX}/backend-data`]).VtepMAC as string;
        return m !== macBefore ? m : null;
      }, 15_000, 'flannel\'s daemon publishes its VtepMAC');
      await waitFor(async () => (await show(c!.set.hosts[0]!, ['bridge', 'fdb', 'show', 'dev', 'flannel.1'])).includes(`${macRef} dst 192.0.2.3`), 15_000, 'h0 follows n3\'s new VtepMAC');
      await podPingsEventually(c!, 0, 2, 30_000);
      await podPingsEventually(c!, 2, 0, 30_000);
      await podPingsEventually(c!, 1, 2, 30_000);
      await podPingsEventually(c!, 2, 1, 30_000);
      const a = (await getNode(c!.k, 'n3')).metadata.annotations as Record<string, string>;
      assert.equal(a[`${PREFIX}/backend-type`], 'vxlan');
      assert.equal(a[`${PREFIX}/public-ip`], '192.0.2.3');
      assert.match(a[`${PREFIX}/backend-data`]!, /^\{"VNI":1,"VtepMAC":"[0-9a-f:]{17}"\}$/);
    } finally {
      await ref.stop();
    }
    // Ours again on n3.
    await startNode(c!, 2).waitForLine(/ running/, 30_000);
    await podPingMatrix(c!, [0, 1, 2]);
  });

  test('wireguard: the same three nodes switched to the wireguard backend; CNI pods reach each other', async () => {
    await Promise.all(c!.daemons.map((d) => d!.stop()));
    // Switching backends leaves the old device behind (as flannel does); remove it as an operator would.
    for (const h of c!.set.hosts) await h.exec(['ip', 'link', 'del', 'flannel.1']);
    const wgConf = join(c!.dir, 'net-conf-wg.json');
    await writeFile(wgConf, JSON.stringify({ Network: '10.244.0.0/16', Backend: { Type: 'wireguard' } }));
    await Promise.all([0, 1, 2].map((i) => startNode(c!, i, { netConf: wgConf }).waitForLine(/ running/, 30_000)));
    for (let i = 0; i < 3; i++) {
      const a = (await getNode(c!.k, nodeName(i))).metadata.annotations as Record<string, string>;
      assert.equal(a[`${PREFIX}/backend-type`], 'wireguard');
      assert.match(a[`${PREFIX}/backend-data`]!, /^\{"PublicKey":"[A-Za-z0-9+/]{43}="\}$/);
    }
    await podPingMatrix(c!, [0, 1, 2]);
  });
});
