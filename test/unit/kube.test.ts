/**
 * The Kubernetes subnet manager's parts without a cluster: annotation
 * names, node <-> lease text (hostile annotations included), kubeconfig
 * and in-cluster settings, and the node watch against a protocol-level
 * fake API server (paged list, watch from the list's resourceVersion,
 * resume after the server ends a watch, 410 Gone -> list again, outage,
 * coalescing of many updates of one node).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { annotationKeys } from '../../src/subnet/kube/annotations.js';
import { nodeToLease, ownAnnotationChanges, slimNode, type SlimNode } from '../../src/subnet/kube/node-lease.js';
import { resolveKubeConnection } from '../../src/subnet/kube/kube-config.js';
import { KubeClient } from '../../src/subnet/kube/client.js';
import { NodeWatch } from '../../src/subnet/kube/node-watch.js';
import { KubeSubnetManager } from '../../src/subnet/kube/manager.js';
import { ConfigError } from '../../src/config/network.js';
import { Readiness } from '../../src/metrics/readiness.js';
import { LeaseDecodeError } from '../../src/subnet/lease-codec.js';
import { decodeNodeList, decodeWatchEvent, ProtoError } from '../../src/subnet/kube/node-proto.js';
import { createLogger } from '../../src/log.js';

const K = annotationKeys();
const P = 'flannel.alpha.coreos.com/';

test('annotation prefix rules are flannel\'s', () => {
  assert.equal(annotationKeys().backendType, 'flannel.alpha.coreos.com/backend-type');
  assert.equal(annotationKeys('example.com/9').backendType, 'example.com/9-backend-type');
  assert.equal(annotationKeys('example.com/x-').publicIP, 'example.com/x-public-ip');
  assert.equal(annotationKeys('example.com/').kubeSubnetManager, 'example.com/kube-subnet-manager');
  assert.throws(() => annotationKeys('a/b/c'), /at most one "\/"/);
  assert.throws(() => annotationKeys('Example.com'), /must look like/);
  assert.throws(() => annotationKeys('nodots'), /must look like/);
});

function node(name: string, podCIDRs: string[], annotations: Record<string, string> | null, created = '2026-12-01T00:00:00Z'): SlimNode {
  return slimNode({ metadata: { name, creationTimestamp: created, annotations }, spec: { podCIDR: podCIDRs[0], podCIDRs } }, K)!;
}
const vx = { enableIPv4: true, enableIPv6: false, backendType: 'vxlan' };
const good = { [`${P}kube-subnet-manager`]: 'true', [`${P}backend-type`]: 'vxlan', [`${P}backend-data`]: '{"VNI":1,"VtepMAC":"02:00:00:00:00:01"}', [`${P}public-ip`]: '192.0.2.1' };

test('a node is a lease as flannel reads it; nodes without the gate or without any annotation are none', () => {
  const l = nodeToLease(node('n1', ['10.244.1.0/24'], good), K, vx)!;
  assert.equal(l.key, 'node/n1');
  assert.deepEqual(l.subnet, { ip: (10 << 24 | 244 << 16 | 1 << 8) >>> 0, prefixLen: 24 });
  assert.equal(l.attrs.publicIP, '192.0.2.1');
  assert.deepEqual(l.attrs.backendData, { VNI: 1, VtepMAC: '02:00:00:00:00:01' });
  assert.equal(l.expiration, 0);
  assert.equal(nodeToLease(node('n2', ['10.244.2.0/24'], null), K, vx), null);
  assert.equal(nodeToLease(node('n2', ['10.244.2.0/24'], { [`${P}kube-subnet-manager`]: 'false' }), K, vx), null);
  // Only our prefix's annotations are kept of a node.
  assert.deepEqual(Object.keys(node('n3', [], { 'other/x': 'y', ...good }).annotations).sort(), Object.keys(good).sort());
  assert.equal(slimNode({ metadata: { name: 'Bad Name' } }, K), null);
});

test('hostile annotations and podCIDRs are refused with a reason, never trimmed', () => {
  const reason = (a: Record<string, string>, cidrs = ['10.244.1.0/24']) => {
    try {
      nodeToLease(node('n1', cidrs, { ...good, ...a }), K, vx);
      return 'accepted';
    } catch (err) {
      assert.ok(err instanceof LeaseDecodeError);
      return err.reason;
    }
  };
  assert.equal(reason({ [`${P}public-ip`]: '192.0.2.7 dev lo' }), 'malformed_public_ip');
  assert.equal(reason({ [`${P}public-ip`]: ' 192.0.2.7' }), 'malformed_public_ip');
  assert.equal(reason({ [`${P}public-ip`]: '' }), 'malformed_public_ip');
  assert.equal(reason({ [`${P}backend-data`]: 'not json' }), 'malformed_backend_data');
  assert.equal(reason({ [`${P}backend-type`]: 'vx lan' }), 'malformed_backend_type');
  assert.equal(reason({ [`${P}backend-type`]: 'host-gw' }), 'other_backend_type');
  assert.equal(reason({}, ['10.244.1.5/24']), 'malformed_pod_cidr');
  assert.equal(reason({}, ['10.244.1.0/24 ']), 'malformed_pod_cidr');
  assert.equal(reason({}, ['10.244.1.0/24', 'fd00::1/64']), 'malformed_pod_cidr');
  assert.equal(reason({}), 'accepted');
});

test('dual stack: both families of a node are read, and every field counts', () => {
  const a = { ...good, [`${P}public-ipv6`]: '2001:db8::1', [`${P}backend-v6-data`]: '{"VNI":1,"VtepMAC":"02:00:00:00:00:02"}' };
  const l = nodeToLease(node('n1', ['10.244.1.0/24', 'fd00:10:244:1::/64'], a), K, { enableIPv4: true, enableIPv6: true, backendType: 'vxlan' })!;
  assert.equal(l.attrs.publicIPv6, '2001:db8::1');
  assert.deepEqual(l.attrs.backendV6Data, { VNI: 1, VtepMAC: '02:00:00:00:00:02' });
  assert.equal(l.ipv6Subnet!.prefixLen, 64);
});

test('our annotations: only changed keys are patched; overwrite and node-public-ip are followed', () => {
  const attrs = { publicIP: '192.0.2.1', publicIPv6: null, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '02:00:00:00:00:01' } };
  assert.deepEqual(ownAnnotationChanges(node('n1', ['10.244.1.0/24'], null), K, attrs, {}), good);
  assert.deepEqual(ownAnnotationChanges(node('n1', ['10.244.1.0/24'], good), K, attrs, {}), {});
  const over = { ...good, [`${P}public-ip-overwrite`]: '198.18.0.1' };
  assert.deepEqual(ownAnnotationChanges(node('n1', ['10.244.1.0/24'], over), K, attrs, {}), { [`${P}public-ip`]: '198.18.0.1' });
  // A garbled overwrite is not published.
  const bad = { ...good, [`${P}public-ip-overwrite`]: '198.18.0.1; rm' };
  assert.deepEqual(ownAnnotationChanges(node('n1', ['10.244.1.0/24'], bad), K, attrs, {}), {});
  // node-public-ip changed after start: published.
  const pinned = { ...good, [`${P}node-public-ip`]: '198.18.0.9' };
  assert.deepEqual(ownAnnotationChanges(node('n1', ['10.244.1.0/24'], pinned), K, attrs, { publicIP: '192.0.2.1' }), { [`${P}public-ip`]: '198.18.0.9' });
  // udp has no BackendData: flannel writes "null".
  assert.equal(ownAnnotationChanges(node('n1', [], null), K, { publicIP: '192.0.2.1', publicIPv6: null, backendType: 'udp' }, {})[`${P}backend-data`], 'null');
});

test('kubeconfig, --kube-api-url and in-cluster settings', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fts-kcfg-'));
  await writeFile(join(dir, 'ca.crt'), 'CA');
  await writeFile(join(dir, 'token'), 'tok');
  await writeFile(
    join(dir, 'kc'),
    'apiVersion: v1\nkind: Config\nclusters:\n- name: a\n  cluster:\n    server: https://198.18.0.1:6443\n    certificate-authority: ca.crt\nusers:\n- name: u\n  user:\n    tokenFile: token\ncontexts:\n- name: c\n  context: {cluster: a, user: u}\ncurrent-context: c\n',
  );
  const c = resolveKubeConnection({ apiUrl: '', kubeconfigFile: join(dir, 'kc'), env: {} });
  assert.equal(c.server, 'https://198.18.0.1:6443');
  assert.equal(c.ca!.toString(), 'CA');
  assert.equal(c.tokenFile, join(dir, 'token'));
  assert.equal(resolveKubeConnection({ apiUrl: 'https://198.18.0.2:443/', kubeconfigFile: join(dir, 'kc'), env: {} }).server, 'https://198.18.0.2:443');
  const ic = resolveKubeConnection({ apiUrl: '', kubeconfigFile: '', env: { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' }, serviceAccountDir: dir });
  assert.equal(ic.server, 'https://[fd00::1]:443');
  assert.equal(ic.tokenFile, join(dir, 'token'));
  assert.throws(() => resolveKubeConnection({ apiUrl: '', kubeconfigFile: '', env: {}, serviceAccountDir: dir }), /not in a pod/);
  await writeFile(join(dir, 'exec'), 'clusters:\n- name: a\n  cluster: {server: "https://x"}\nusers:\n- name: u\n  user: {exec: {command: aws}}\ncontexts:\n- name: c\n  context: {cluster: a, user: u}\ncurrent-context: c\n');
  assert.throws(() => resolveKubeConnection({ apiUrl: '', kubeconfigFile: join(dir, 'exec'), env: {} }), /exec and auth-provider/);
});

/** A protocol-level fake API server for nodes: list pages, watch streams the test feeds. */
class FakeApi {
  rv = 100;
  nodes = new Map<string, Record<string, unknown>>();
  watches: { res: ServerResponse; from: number }[] = [];
  lists = 0;
  watchFrom: number[] = [];
  down = false;
  tokens: string[] = [];
  server = createServer((req, res) => this.handle(req, res));

  async start(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', () => r()));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  obj(name: string, cidr: string, extra: Record<string, string> = {}): Record<string, unknown> {
    return { metadata: { name, resourceVersion: String(this.rv), creationTimestamp: '2026-12-01T00:00:00Z', annotations: { ...good, [`${P}public-ip`]: '192.0.2.9', ...extra } }, spec: { podCIDR: cidr } };
  }

  put(name: string, cidr: string, extra: Record<string, string> = {}): void {
    this.rv++;
    const o = this.obj(name, cidr, extra);
    const type = this.nodes.has(name) ? 'MODIFIED' : 'ADDED';
    this.nodes.set(name, o);
    for (const w of this.watches) w.res.write(JSON.stringify({ type, object: o }) + '\n');
  }

  del(name: string): void {
    this.rv++;
    const o = this.nodes.get(name)!;
    this.nodes.delete(name);
    for (const w of this.watches) w.res.write(JSON.stringify({ type: 'DELETED', object: { ...o, metadata: { ...(o.metadata as object), resourceVersion: String(this.rv) } } }) + '\n');
  }

  endWatches(withGone = false): void {
    for (const w of this.watches) {
      if (withGone) w.res.write(JSON.stringify({ type: 'ERROR', object: { kind: 'Status', code: 410, reason: 'Expired' } }) + '\n');
      w.res.end();
    }
    this.watches = [];
  }

  private handle(req: IncomingMessage, res: ServerResponse): void {
    this.tokens.push(req.headers.authorization ?? '');
    if (this.down) {
      req.socket.destroy();
      return;
    }
    const url = new URL(req.url!, 'http://x');
    if (req.method === 'POST' && url.pathname === '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews') {
      return void res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ status: { allowed: true } }));
    }
    if (url.pathname !== '/api/v1/nodes') return void res.writeHead(404).end();
    if (url.searchParams.get('watch')) {
      const from = Number(url.searchParams.get('resourceVersion'));
      this.watchFrom.push(from);
      res.writeHead(200, { 'content-type': 'application/json' });
      this.watches.push({ res, from });
      res.write(JSON.stringify({ type: 'BOOKMARK', object: { metadata: { resourceVersion: String(this.rv) } } }) + '\n');
      return;
    }
    this.lists++;
    const all = [...this.nodes.values()];
    const start = Number(url.searchParams.get('continue') || 0);
    const limit = Number(url.searchParams.get('limit') || all.length);
    const items = all.slice(start, start + limit);
    const cont = start + limit < all.length ? String(start + limit) : '';
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ metadata: { resourceVersion: String(this.rv), continue: cont }, items }));
  }
}

const waitUntil = async (fn: () => boolean, what: string) => {
  for (let i = 0; i < 200; i++) {
    if (fn()) return;
    await new Promise((r) => setTimeout(r, 20));
  }
  assert.fail(`timed out: ${what}`);
};

test('node watch: paged list, watch from its version, resume after the server ends a watch, 410 lists again, outages retried', { timeout: 30_000 }, async () => {
  const api = new FakeApi();
  for (let i = 1; i <= 1201; i++) api.put(`n${i}`, `10.${(i >> 8) & 255}.${i & 255}.0/24`);
  const url = await api.start();
  const dir = await mkdtemp(join(tmpdir(), 'fts-kw-'));
  await writeFile(join(dir, 'token'), 'first');
  const client = new KubeClient({ server: url, tokenFile: join(dir, 'token'), source: 'test' }, createLogger('test'));
  const listed: number[] = [];
  const changed: string[][] = [];
  const trouble: (string | null)[] = [];
  const w = new NodeWatch(client, (o) => slimNode(o, K), { onListed: (n) => listed.push(n.size), onChanged: (s) => changed.push([...s]), onTrouble: (p) => trouble.push(p) }, createLogger('test'), { initial: 50, max: 200 });
  try {
    await w.start();
    assert.deepEqual(listed, [1201]);
    assert.equal(api.lists, 13, 'thirteen pages of 100');
    await waitUntil(() => api.watches.length === 1, 'watch opened');
    assert.equal(api.watchFrom[0], api.rv, 'watch starts at the list\'s version');

    // Many updates of one node arrive as one change.
    for (let i = 0; i < 50; i++) api.put('n1', '10.0.1.0/24', { [`${P}public-ip`]: `192.0.2.${i + 10}` });
    await waitUntil(() => changed.flat().includes('n1'), 'n1 changed');
    assert.equal(changed.length, 1);
    assert.equal(w.nodes.get('n1')!.annotations[`${P}public-ip`], '192.0.2.59');

    // The server ends the watch (its timeout): resumed from the last version seen, no listing.
    const rvSeen = api.rv;
    api.endWatches();
    await waitUntil(() => api.watches.length === 1, 'watch resumed');
    assert.equal(api.watchFrom.at(-1), rvSeen);
    assert.equal(api.lists, 13);

    // 410 Gone: list again; a node deleted meanwhile is gone from the listing.
    api.nodes.delete('n5');
    api.endWatches(true);
    await waitUntil(() => listed.length === 2, 'listed again');
    assert.equal(listed[1], 1200);
    assert.ok(!w.nodes.has('n5'));

    // An outage: retried with backoff, reported, and a rotated token picked up on the way back (after a 401 it is re-read).
    api.down = true;
    api.endWatches();
    await waitUntil(() => trouble.some((t) => t !== null), 'trouble reported');
    await writeFile(join(dir, 'token'), 'second');
    api.del('n6');
    api.down = false;
    await waitUntil(() => api.watches.length === 1, 'watch back');
    assert.equal(trouble.at(-1), null);
    // The fake does not replay what happened while it was down (a real server does, or answers 410): a 410 then brings it through a listing.
    api.endWatches(true);
    await waitUntil(() => listed.length === 3, 'listed after outage');
    assert.ok(!w.nodes.has('n6'));
  } finally {
    w.stop();
    client.close();
    api.endWatches();
    api.server.close();
  }
});

test('a 401 makes the client read the token file again', { timeout: 10_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fts-kt-'));
  await writeFile(join(dir, 'token'), 'old');
  const seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(req.headers.authorization ?? '');
    if (req.headers.authorization !== 'Bearer new') return void res.writeHead(401).end('{"kind":"Status","reason":"Unauthorized"}');
    res.writeHead(200).end('{"ok":true}');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const client = new KubeClient({ server: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, tokenFile: join(dir, 'token'), source: 'test' }, createLogger('test'));
  try {
    await assert.rejects(client.request('GET', '/x'), /401 Unauthorized/);
    await writeFile(join(dir, 'token'), 'new\n');
    assert.deepEqual(await client.request('GET', '/x'), { ok: true });
    assert.deepEqual(seen, ['Bearer old', 'Bearer old', 'Bearer old', 'Bearer new']);
  } finally {
    client.close();
    server.close();
  }
});

/** A small protobuf writer: enough to build the API server's Node messages. */
const pb = {
  varint(n: number): Buffer {
    const out: number[] = [];
    while (n >= 0x80) {
      out.push((n % 128) | 0x80);
      n = Math.floor(n / 128);
    }
    out.push(n);
    return Buffer.from(out);
  },
  bytes(field: number, b: Buffer | string): Buffer {
    const v = typeof b === 'string' ? Buffer.from(b) : b;
    return Buffer.concat([pb.varint(field * 8 + 2), pb.varint(v.length), v]);
  },
  num(field: number, n: number): Buffer {
    return Buffer.concat([pb.varint(field * 8), pb.varint(n)]);
  },
  envelope(kind: string, raw: Buffer): Buffer {
    return Buffer.concat([Buffer.from('k8s\0', 'latin1'), pb.bytes(1, Buffer.concat([pb.bytes(1, 'v1'), pb.bytes(2, kind)])), pb.bytes(2, raw)]);
  },
  node(name: string, cidrs: string[], annotations: Record<string, string>): Buffer {
    const meta = Buffer.concat([
      pb.bytes(1, name),
      pb.bytes(6, '42'),
      pb.bytes(8, Buffer.concat([pb.num(1, 1_764_547_200), pb.num(2, 0)])),
      ...Object.entries(annotations).map(([k, v]) => pb.bytes(12, Buffer.concat([pb.bytes(1, k), pb.bytes(2, v)]))),
      pb.bytes(11, Buffer.concat([pb.bytes(1, 'kubernetes.io/os'), pb.bytes(2, 'linux')])),
    ]);
    const spec = Buffer.concat([pb.bytes(1, cidrs[0] ?? ''), ...cidrs.map((c) => pb.bytes(7, c)), pb.bytes(3, 'aws:///i-1')]);
    // A kubelet-sized status the decoder must skip unread.
    const status = pb.bytes(3, Buffer.concat(Array.from({ length: 20 }, (_, i) => pb.bytes(12, `image-${i}-${'x'.repeat(100)}`))));
    return Buffer.concat([pb.bytes(1, meta), pb.bytes(2, spec), status]);
  },
};

test('protobuf: a NodeList and watch events decode to the fields kept, status and foreign annotations skipped; garbage is an error', () => {
  const wanted = new Set(Object.values(K));
  const n1 = pb.node('n1', ['10.244.1.0/24', 'fd00:10:244:1::/64'], { ...good, 'other.io/big': 'y'.repeat(5000) });
  const n2 = pb.node('n2', ['10.244.2.0/24'], {});
  const list = pb.envelope('NodeList', Buffer.concat([pb.bytes(1, Buffer.concat([pb.bytes(2, '77'), pb.bytes(3, 'next-page')])), pb.bytes(2, n1), pb.bytes(2, n2)]));
  const page = decodeNodeList(list, wanted);
  assert.equal(page.resourceVersion, '77');
  assert.equal(page.continue, 'next-page');
  assert.equal(page.items.length, 2);
  const s1 = slimNode(page.items[0]!, K)!;
  assert.deepEqual(s1, { name: 'n1', created: 1_764_547_200_000, podCIDRs: ['10.244.1.0/24', 'fd00:10:244:1::/64'], annotations: good });
  assert.equal(nodeToLease(s1, K, vx)!.attrs.publicIP, '192.0.2.1');
  assert.deepEqual(slimNode(page.items[1]!, K)!.annotations, {});

  const event = (type: string, obj: Buffer) => Buffer.concat([pb.bytes(1, type), pb.bytes(2, pb.bytes(1, obj))]);
  const modified = decodeWatchEvent(event('MODIFIED', pb.envelope('Node', n2)), wanted);
  assert.equal(modified.type, 'MODIFIED');
  assert.equal(modified.object.metadata!.name, 'n2');
  const gone = decodeWatchEvent(event('ERROR', pb.envelope('Status', Buffer.concat([pb.bytes(4, 'Expired'), pb.num(6, 410)]))), wanted);
  assert.deepEqual(gone.object, { code: 410, reason: 'Expired' });

  assert.throws(() => decodeNodeList(Buffer.from('{"kind":"NodeList"}'), wanted), ProtoError);
  assert.throws(() => decodeNodeList(list.subarray(0, list.length - 7), wanted), ProtoError);
  assert.throws(() => decodeNodeList(pb.envelope('Pod', Buffer.alloc(0)), wanted), /expected a NodeList/);
  // Random bytes after a valid envelope header never crash, they throw or decode.
  for (let i = 0; i < 200; i++) {
    const junk = Buffer.concat([Buffer.from('k8s\0', 'latin1'), Buffer.from(Array.from({ length: 64 }, () => Math.floor(Math.random() * 256)))]);
    try {
      decodeNodeList(junk, wanted);
    } catch (err) {
      assert.ok(err instanceof ProtoError, String(err));
    }
  }
});

test('a podCIDR outside Network is refused with both CIDRs named and the fix; a node without podCIDR is waited for', { timeout: 20_000 }, async () => {
  const api = new FakeApi();
  api.put('self', '10.99.1.0/24');
  api.put('late', '');
  const url = await api.start();
  const dir = await mkdtemp(join(tmpdir(), 'fts-kmgr-'));
  await writeFile(join(dir, 'net-conf.json'), '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}');
  const attrs = { publicIP: '192.0.2.1', publicIPv6: null, backendType: 'vxlan', backendData: { VNI: 1, VtepMAC: '02:00:00:00:00:01' } };
  const make = (node: string, readiness?: Readiness) =>
    new KubeSubnetManager({
      apiUrl: url,
      kubeconfigFile: '',
      annotationPrefix: 'flannel.alpha.coreos.com',
      netConfPath: join(dir, 'net-conf.json'),
      setNodeNetworkUnavailable: false,
      env: { NODE_NAME: node },
      readiness,
      backoffMs: { initial: 20, max: 50 },
      client: new KubeClient({ server: url, source: 'test' }, createLogger('test')),
    });
  const sm = make('self');
  try {
    await sm.start();
    await assert.rejects(sm.acquireLease(attrs), (err: Error) => err instanceof ConfigError && /10\.99\.1\.0\/24 is outside Network 10\.244\.0\.0\/16/.test(err.message) && /cluster-cidr/.test(err.message));
  } finally {
    await sm.close();
  }
  const readiness = new Readiness();
  const late = make('late', readiness);
  try {
    await late.start();
    const pending = late.acquireLease(attrs);
    await waitUntil(() => readiness.waitingFor === "waiting for this node's podCIDR", 'readiness names the podCIDR');
    // Stopping the daemon ends the wait.
    const settled = pending.then(() => 'taken', (err: Error) => err.message);
    await late.close();
    assert.equal(await settled, 'stopped');
  } finally {
    await late.close();
    api.endWatches();
    api.server.close();
  }
});
