/**
 * Hardening 2 (issue 24), the parts a unit test reaches: hostile lease text
 * (the codec and the applier's line builder, fuzzed), iproute2 abandoning a
 * batch, the WireGuard rx worker's handshake defences (mac1 first, per
 * source, bounded hand-off), keys erased only after the quarantine, the key
 * file and the wg API socket, /healthz.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, symlink, stat, chmod, mkdir } from 'node:fs/promises';
import { request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodeLeaseAttrs, LeaseDecodeError } from '../../src/subnet/lease-codec.js';
import { KernelStateApplier, type KernelState } from '../../src/net/kernel-state.js';
import { IpRoute } from '../../src/net/iproute.js';
import { parseIP4, parseIP4Net } from '../../src/net/ipaddr.js';
import { createLogger } from '../../src/log.js';
import { loadNative } from '../../src/native/addon.js';
import { PacketBatch } from '../../src/tun/packet-batch.js';
import { createPeerTableBuffers, PeerTable } from '../../src/wireguard/peer-table.js';
import { createWgCounterBuffer, readWgCounters, wgCounterRegion, WG_REGION_RX } from '../../src/wireguard/counters.js';
import { HANDSHAKE_QUEUE_LIMIT, WireGuardTransport, type TransportNote } from '../../src/wireguard/transport.js';
import { generateKeyPair } from '../../src/wireguard/primitives.js';
import { createInitiation } from '../../src/wireguard/noise.js';
import { CookieGenerator } from '../../src/wireguard/cookie.js';
import { publicKeyOf } from '../../src/wireguard/primitives.js';
import { SourceRateLimiter } from '../../src/wireguard/ratelimiter.js';
import { loadOrCreatePrivateKey } from '../../src/backend/wireguard/key-file.js';
import { serveUapi, applySet } from '../../src/wireguard/uapi.js';
import { Health } from '../../src/metrics/health.js';
import { Metrics } from '../../src/metrics/registry.js';
import { startHealthz } from '../../src/metrics/healthz.js';
import { run } from '../helpers/netns.js';

const dir = await mkdtemp(join(tmpdir(), 'fts-hard-'));
after(() => rm(dir, { recursive: true, force: true }));
const log = createLogger('test');

/** Hostile strings: control characters, separators, option-like tails, near-misses of addresses. */
function hostileStrings(seed: number, n: number): string[] {
  let x = seed;
  const rnd = () => ((x = (x * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const pieces = ['192.0.2.7', ' ', '\u000b', '\n', '\t', '\r', '\u0000', ' dev lo', '/24', '::', '2001:db8::7', '0', '00', '.', ':', 'ff', '"', '\\', '%eth0', '1', '255', '256', '-', 'via', '\u00a0', '\u2028', 'A', 'x'];
  const out = ['192.0.2.7\u000b', '192.0.2.7\n', '192.0.2.7 ', ' 192.0.2.7', '192.0.2.7 dev lo', '192.0.2.07', '2001:DB8::7', '2001:db8:0::7', '::ffff:192.0.2.7'];
  for (let i = 0; i < n; i++) {
    let s = '';
    const k = 1 + Math.floor(rnd() * 5);
    for (let j = 0; j < k; j++) s += pieces[Math.floor(rnd() * pieces.length)];
    out.push(s);
  }
  return out;
}

const TOKEN = /^[0-9a-f.:/]+$/;

test('lease codec, fuzzed: an address is kept only in canonical form; anything else is refused with a reason, never trimmed', { timeout: 60_000 }, () => {
  for (const s of hostileStrings(7, 3000)) {
    for (const field of ['PublicIP', 'PublicIPv6'] as const) {
      const value = field === 'PublicIP' ? { PublicIP: s } : { PublicIP: '192.0.2.9', PublicIPv6: s };
      let attrs;
      try {
        attrs = decodeLeaseAttrs('k', JSON.stringify(value));
      } catch (err) {
        assert.ok(err instanceof LeaseDecodeError, String(err));
        assert.match(err.reason, /^malformed_public_ipv?6?$/);
        continue;
      }
      const kept = field === 'PublicIP' ? attrs.publicIP : attrs.publicIPv6!;
      assert.equal(kept, s, 'kept only when exactly the text');
      assert.match(kept, TOKEN, JSON.stringify(kept));
    }
  }
  assert.throws(() => decodeLeaseAttrs('k', '{"PublicIP":"192.0.2.7","BackendType":"vxlan\\n"}'), (e: LeaseDecodeError) => e.reason === 'malformed_backend_type');
  assert.equal(decodeLeaseAttrs('k', '{"PublicIP":"192.0.2.7","PublicIPv6":"2001:db8::7","BackendType":"host-gw"}').publicIPv6, '2001:db8::7');
});

function applierFor(write: IpRoute, bridge = new IpRoute({ mode: 'plan', binary: 'bridge' })) {
  const read = new IpRoute({ mode: 'plan', planOutputs: {} });
  return new KernelStateApplier({ scope: { network: parseIP4Net('10.5.0.0/16'), routeDevs: ['eth0', 'flannel.1'], ownedDevs: ['flannel.1'], xfrmReqid: 11 }, readIp: read, readBridge: read, writeIp: write, writeBridge: bridge, log });
}

test("the applier's line builder, fuzzed: no line carries a token that is not canonical; every refused entry names its lease", { timeout: 60_000 }, async () => {
  const strings = hostileStrings(11, 600);
  const want: KernelState = { routes: [], neighs: [], fdb: [], policies: [] };
  strings.forEach((s, i) => {
    const origin = `subnets/10.5.${i % 250}.0-24`;
    const dst = `10.5.${i % 250}.0/24`;
    want.routes.push({ dst, via: s, dev: 'eth0', origin });
    want.fdb.push({ dev: 'flannel.1', mac: i % 2 ? s : '0a:00:00:00:00:01', dst: i % 2 ? '192.0.2.9' : s, origin });
    want.neighs.push({ dev: 'flannel.1', ip: `10.5.${i % 250}.0`, mac: s, origin });
    want.policies!.push({ src: '10.5.1.0/24', dst, dir: 'out', tmplSrc: '192.0.2.1', tmplDst: s, reqid: 11, origin });
  });
  want.routes.push({ dst: '10.5.251.0/24', via: '192.0.2.7', dev: 'eth0', origin: 'subnets/10.5.251.0-24' });
  const ip = new IpRoute({ mode: 'plan' });
  const bridge = new IpRoute({ mode: 'plan', binary: 'bridge' });
  const r = await applierFor(ip, bridge).apply(want);
  const known = new Set(['route', 'replace', 'via', 'dev', 'onlink', 'neigh', 'lladdr', 'nud', 'permanent', 'fdb', 'dst', 'self', 'xfrm', 'policy', 'update', 'src', 'dir', 'out', 'tmpl', 'proto', 'esp', 'reqid', 'mode', 'tunnel', 'eth0', 'flannel.1', '11']);
  for (const line of [...ip.lines(), ...bridge.lines()]) {
    for (const tok of line.split(' ').slice(1)) assert.ok(known.has(tok) || TOKEN.test(tok), `token ${JSON.stringify(tok)} in ${JSON.stringify(line)}`);
    assert.ok(!/[\s]/.test(line.replace(/ /g, '')), JSON.stringify(line));
  }
  assert.ok(r.failures.length > 0);
  for (const f of r.failures) assert.match(f.origin ?? '', /^subnets\/10\.5\.\d+\.0-24$/);
  // The legitimate entries all made it.
  assert.ok(ip.lines().includes('ip route replace 10.5.251.0/24 via 192.0.2.7 dev eth0'), ip.lines().slice(0, 5).join('\n'));
});

test('iproute2 exiting on a line it cannot parse (-force or not): every other line of the batch is still applied, the bad one reported with its lease', { timeout: 60_000 }, async () => {
  const ns = `ftsbatch${process.pid % 10000}`;
  await run('ip', ['netns', 'add', ns], { check: true });
  try {
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up'], { check: true });
    const wrapper = join(dir, 'ip');
    await writeFile(wrapper, `#!/bin/sh\nexec ip -n ${ns} "$@"\n`, { mode: 0o755 });
    const ip = new IpRoute({ binary: wrapper });
    // A hostile token that got past everything else: iproute2 exits on it (reproduced in the issue).
    const lines = ['route replace 10.5.1.0/24 dev lo', 'route replace 10.5.2.0/24 via 192.0.2.7\u000b dev lo', 'route replace 10.5.3.0/24 dev lo', 'route replace 10.5.4.0/24 dev lo'];
    const failures = await ip.batch(lines);
    assert.deepEqual(failures.map((f) => f.line), [lines[1]]);
    const routes = (await run('ip', ['-n', ns, 'route', 'show'], { check: true })).stdout;
    for (const n of [1, 3, 4]) assert.match(routes, new RegExp(`10\\.5\\.${n}\\.0/24 dev lo`));
  } finally {
    await run('ip', ['netns', 'del', ns]);
  }
});

const native = loadNative();

test('WireGuard rx worker: junk handshakes spend no budget (mac1 first); one source cannot spend the others\u2019; the hand-off is bounded', { timeout: 60_000 }, () => {
  const ours = generateKeyPair();
  const table = new PeerTable(createPeerTableBuffers(16, 4));
  const counters = createWgCounterBuffer();
  const posted: TransportNote[] = [];
  let t = 1_000_000;
  const rx = new WireGuardTransport(native, { table: table.buffers, counters, publicKey: publicKeyOf(ours.privateKey) }, wgCounterRegion(counters, WG_REGION_RX), (n) => posted.push(n), () => t);
  const initiation = () => {
    const peer = generateKeyPair();
    const { message } = createInitiation({ staticPrivate: peer.privateKey, staticPublic: peer.publicKey }, publicKeyOf(ours.privateKey), 1);
    new CookieGenerator(publicKeyOf(ours.privateKey)).addMacs(message, t);
    return message;
  };
  const deliver = (msgs: Buffer[], source: (i: number) => number) => {
    const b = new PacketBatch(msgs.length, 256);
    msgs.forEach((m, i) => {
      m.copy(b.buf, i * 256);
      b.lens[i] = m.length;
      b.addrs[i] = source(i);
      b.ports[i] = 51820;
    });
    assert.equal(rx.open(b, msgs.length), 0);
  };
  // 5,000 blind initiations (right type and length, no valid mac1) in the same second as a genuine one.
  const junk = Array.from({ length: 5000 }, () => {
    const m = Buffer.alloc(148);
    m[0] = 1;
    m.fill(7, 4);
    return m;
  });
  deliver([...junk, initiation()], () => parseIP4('198.18.0.9'));
  let c = readWgCounters(counters);
  assert.equal(c.dropBadMac, 5000);
  assert.equal(posted.length, 1, 'the genuine initiation got through');
  // One source flooding valid-mac1 initiations gets its burst; another source still gets through.
  deliver(Array.from({ length: 50 }, initiation), () => parseIP4('198.18.0.10'));
  deliver([initiation()], () => parseIP4('198.18.0.11'));
  c = readWgCounters(counters);
  assert.equal(posted.length, 1 + 5 + 1);
  assert.equal(c.dropHandshakeRateLimited, 45);
  // The main thread takes nothing: the queue fills to its bound, the rest is shed and counted.
  t += 10_000;
  deliver(Array.from({ length: HANDSHAKE_QUEUE_LIMIT }, initiation), (i) => parseIP4('198.19.0.0') + i);
  assert.equal(table.handshakesQueued, HANDSHAKE_QUEUE_LIMIT);
  assert.ok(readWgCounters(counters).dropHandshakeBacklog > 0);
});

test('per-source rate limiter: wireguard-go\u2019s 20/s with a burst of 5, bounded in sources', { timeout: 60_000 }, () => {
  const l = new SourceRateLimiter(20, 5, 3);
  let ok = 0;
  for (let i = 0; i < 100; i++) if (l.allow('a', 0)) ok++;
  assert.equal(ok, 5);
  assert.equal(l.allow('a', 50), true, 'one more token after 50 ms');
  assert.equal(l.allow('b', 50) && l.allow('c', 50), true);
  assert.equal(l.allow('d', 50), false, 'the table is full: a new source is refused, it does not grow');
  assert.equal(l.allow('d', 2000), true, 'idle buckets are swept');
});

test('a freed keypair keeps its keys until its slot leaves the quarantine', { timeout: 60_000 }, () => {
  const t = new PeerTable(createPeerTableBuffers(4, 2));
  t.writeKeypair(1, 0, 1, 2, Buffer.alloc(32, 9), Buffer.alloc(32, 8), true, 0);
  const gen = t.keypairGeneration(1);
  t.clearKeypair(1);
  assert.equal(t.keypairValid(1), false);
  assert.notEqual(t.keypairGeneration(1), gen, 'a batch that picked it sees the generation move');
  assert.deepEqual(Buffer.from(t.sendKeys.subarray(32, 64)), Buffer.alloc(32, 9), 'a batch in flight never seals under zeros');
  t.eraseKeys(1);
  assert.deepEqual(Buffer.from(t.sendKeys.subarray(32, 64)), Buffer.alloc(32, 0));
});

test('key file: never through a symlink, refused when others may write it or it is not ours, made 0600 when others may read it', { timeout: 60_000 }, async () => {
  const target = join(dir, 'elsewhere');
  await writeFile(target, generateKeyPair().privateKey.toString('base64') + '\n', { mode: 0o600 });
  const link = join(dir, 'wgkey-link');
  await symlink(target, link);
  await assert.rejects(loadOrCreatePrivateKey(link), /is a symlink; refusing to follow it/);
  const writable = join(dir, 'wgkey-writable');
  await writeFile(writable, generateKeyPair().privateKey.toString('base64') + '\n');
  await chmod(writable, 0o666);
  await assert.rejects(loadOrCreatePrivateKey(writable), /writable by others/);
  const readable = join(dir, 'wgkey-readable');
  await writeFile(readable, generateKeyPair().privateKey.toString('base64') + '\n');
  await chmod(readable, 0o644);
  const warned: string[] = [];
  await loadOrCreatePrivateKey(readable, false, (m) => warned.push(m));
  assert.equal((await stat(readable)).mode & 0o777, 0o600);
  assert.equal(warned.length, 1);
  const fresh = join(dir, 'sub', 'wgkey');
  const { created } = await loadOrCreatePrivateKey(fresh);
  assert.ok(created);
  assert.equal((await stat(fresh)).mode & 0o777, 0o600);
});

test('wg API socket: born 0600, never replaces a file that is not a socket, closes idle connections, refuses allowed_ip', { timeout: 60_000 }, async () => {
  const sockDir = join(dir, 'wg');
  await mkdir(sockDir);
  await writeFile(join(sockDir, 'notasock.sock'), 'precious');
  const dev = { privateKey: () => Buffer.alloc(32), listenPort: () => 51820, endpoints: { format: () => '', parse: () => null }, peers: () => [], updatePeer: () => true };
  await assert.rejects(serveUapi(sockDir, 'notasock', dev), /exists and is not a socket/);
  const s = await serveUapi(sockDir, 'flannel-wg', dev);
  try {
    assert.equal((await stat(s.path)).mode & 0o777, 0o600);
    const closed = await new Promise<boolean>((resolve) => {
      const c = connect(s.path);
      c.on('close', () => resolve(true));
      c.on('error', () => resolve(true));
      setTimeout(() => resolve(false), 20_000).unref();
    });
    assert.ok(closed, 'an idle connection is closed');
  } finally {
    await s.close();
  }
  assert.equal(applySet(dev, [`public_key=${'a'.repeat(64)}`, 'allowed_ip=10.5.9.0/24']), 1);
  assert.equal(applySet(dev, [`public_key=${'a'.repeat(64)}`, 'replace_allowed_ips=true']), 1);
});

test('/healthz answers which component is unhealthy, not its details; requests and connections are bounded', { timeout: 60_000 }, async () => {
  const health = new Health();
  health.report('aws-vpc', 'cannot write route in rtb-0secret: UnauthorizedOperation for arn:aws:iam::123456789012:role/x');
  const server = await startHealthz('127.0.0.1', 0, new Metrics(), health);
  try {
    const port = (server.address() as { port: number }).port;
    const body = await new Promise<{ status: number; text: string }>((resolve, reject) => {
      request({ host: '127.0.0.1', port, path: '/healthz' }, (res) => {
        let text = '';
        res.on('data', (d) => (text += d));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
      })
        .on('error', reject)
        .end();
    });
    assert.equal(body.status, 503);
    assert.equal(body.text, 'flanneld is unhealthy: aws-vpc (see the log)\n');
    assert.ok(server.headersTimeout > 0 && server.headersTimeout <= 10_000);
    assert.ok(server.maxConnections > 0 && server.maxConnections <= 256);
  } finally {
    server.close();
  }
});

test('exclusive holds: a path (flock, machine-wide) and a device name (per network namespace), released on release or death', { timeout: 60_000 }, async () => {
  const { holdPath, holdDevice, LockHeldError } = await import('../../src/native/exclusive-lock.js');
  const p = join(dir, 'run-ipsec');
  const a = holdPath(p, 'the ipsec run directory', 'FLANNEL_IPSEC_RUN_DIR');
  assert.throws(() => holdPath(p, 'the ipsec run directory', 'FLANNEL_IPSEC_RUN_DIR'), (e: Error) => e instanceof LockHeldError && /run-ipsec is in use by another running flanneld .* own FLANNEL_IPSEC_RUN_DIR/.test(e.message));
  await a.release();
  await (holdPath(p, 'x', 'Y')).release();
  const d = await holdDevice(`ftsdev${process.pid}`, 'network namespace');
  await assert.rejects(holdDevice(`ftsdev${process.pid}`, 'network namespace'), /device ftsdev\d+ is in use by another running flanneld in this network namespace/);
  await d.release();
  await (await holdDevice(`ftsdev${process.pid}`, 'network namespace')).release();
  // A holder killed with SIGKILL: the kernel releases its lock.
  const child = (await import('node:child_process')).spawn(process.execPath, ['-e', `import('${new URL('../../src/native/exclusive-lock.js', import.meta.url).href}').then((m) => { m.holdPath(${JSON.stringify(p)}, 'x', 'Y'); console.log('held'); setInterval(() => {}, 1000); })`], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    await new Promise<void>((resolve, reject) => {
      child.stdout!.once('data', () => resolve());
      child.once('exit', (code) => reject(new Error(`the holder exited (${code}) before taking the lock`)));
    });
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  assert.throws(() => holdPath(p, 'x', 'Y'), LockHeldError);
  child.kill('SIGKILL');
  await new Promise((r) => child.once('exit', r));
  await (holdPath(p, 'x', 'Y')).release();
});

test('X25519 key pairs by the thousand never hang the thread (Node 20 deadlocks exporting a freshly generated KeyObject during GC)', { timeout: 120_000 }, async () => {
  // Every handshake makes an ephemeral pair on the daemon's main thread. The old export hung within 5,000 pairs here.
  const { spawn } = await import('node:child_process');
  const mod = new URL('../../src/wireguard/primitives.js', import.meta.url).href;
  const child = spawn(process.execPath, ['-e', `import('${mod}').then((m) => { let x = 0; for (let i = 0; i < 20000; i++) x ^= m.generateKeyPair().publicKey[0]; m.publicKeyOf(m.generateKeyPair().privateKey); console.log('done', x >= 0); })`], { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout!.on('data', (d) => (out += d));
  const timer = setTimeout(() => child.kill('SIGKILL'), 90_000);
  const code = await new Promise((r) => child.once('exit', r));
  clearTimeout(timer);
  assert.equal(code, 0, 'the child finished (a SIGKILL after 90 s means it hung)');
  assert.match(out, /^done true/);
});
