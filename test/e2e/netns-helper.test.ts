import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { createHosts, addAddress, listNamespaces, sweepStale, waitFor, type HostSet } from '../helpers/netns.js';
import { haveBinary, measureLatency } from '../../bench/latency.js';

const skip = process.getuid?.() !== 0 ? 'needs root' : !haveBinary('ip') ? 'needs iproute2' : false;
const PREFIX = 'fte2e';
const HELPER_URL = new URL('../helpers/netns.js', import.meta.url).href;

const mine = () => listNamespaces().filter((n) => n.startsWith(`${PREFIX}-${process.pid}-`));

async function reachable(set: HostSet, from: number, to: number, ip?: string): Promise<boolean> {
  const r = await measureLatency(set.hosts[from]!, set.hosts[to]!, ip ?? set.hosts[to]!.ip, 2, 50);
  return r.received > 0;
}

test('pair: two hosts on one veth, addressed, reachable; destroy removes everything', { skip }, async () => {
  const set = await createHosts(2, { prefix: PREFIX, topology: 'pair' });
  try {
    const [a, b] = set.hosts;
    assert.equal(a!.addr, '192.0.2.1/24');
    assert.equal(b!.addr, '192.0.2.2/24');
    assert.equal(a!.iface, 'eth0');
    assert.ok(a!.ns.startsWith(`${PREFIX}-${process.pid}-`));
    assert.deepEqual(mine().sort(), [a!.ns, b!.ns].sort());
    assert.equal(set.switchNs, undefined);

    const lo = await a!.exec(['ip', '-o', 'link', 'show', 'lo'], { check: true });
    assert.match(lo.stdout, /state UNKNOWN|,UP/);
    const fwd = await b!.exec(['sysctl', '-n', 'net.ipv4.ip_forward'], { check: true });
    assert.equal(fwd.stdout.trim(), '1');

    assert.ok(await reachable(set, 0, 1), 'host 1 reaches host 2');
    assert.ok(await reachable(set, 1, 0), 'host 2 reaches host 1');

    const failing = await a!.exec(['sh', '-c', 'echo out; echo err >&2; exit 3']);
    assert.deepEqual(failing, { code: 3, stdout: 'out\n', stderr: 'err\n' });
    await assert.rejects(a!.exec(['false'], { check: true }), /exited 1/);
    const slow = await a!.exec(['sleep', '5'], { timeoutMs: 100 });
    assert.equal(slow.code, -1);
  } finally {
    await set.destroy();
  }
  assert.deepEqual(mine(), []);
  await set.destroy(); // idempotent
  await assert.rejects(set.hosts[0]!.exec(['true']), /destroyed/);
});

test('bridge: three hosts through a switch namespace, MTU, extra addresses', { skip }, async () => {
  const set = await createHosts(3, { prefix: PREFIX, topology: 'bridge', mtu: 1400 });
  try {
    assert.ok(set.switchNs && mine().includes(set.switchNs));
    assert.deepEqual(set.hosts.map((h) => h.ip), ['192.0.2.1', '192.0.2.2', '192.0.2.3']);
    const link = await set.hosts[2]!.exec(['ip', '-o', 'link', 'show', 'eth0'], { check: true });
    assert.match(link.stdout, /mtu 1400/);
    assert.ok(await reachable(set, 0, 2));
    assert.ok(await reachable(set, 2, 1));

    // An address on lo of host 2, reached from host 1 through a route.
    await addAddress(set.hosts[1]!, '10.99.0.1/32', 'lo');
    await set.hosts[0]!.exec(['ip', 'route', 'add', '10.99.0.1/32', 'via', '192.0.2.2'], { check: true });
    assert.ok(await reachable(set, 0, 1, '10.99.0.1'));
  } finally {
    await set.destroy();
  }
  assert.deepEqual(mine(), []);
});

test('destroy kills processes started with spawn', { skip }, async () => {
  const set = await createHosts(2, { prefix: PREFIX });
  const child = set.hosts[0]!.spawn(['sleep', '300'], { stdio: 'ignore' });
  const exited = new Promise((r) => child.once('exit', (code, sig) => r(sig)));
  await waitFor(() => child.pid !== undefined, 2000, 'sleep to start');
  await set.destroy();
  assert.equal(await exited, 'SIGTERM');
  assert.deepEqual(mine(), []);
});

test('waitFor returns the first truthy value or times out naming what it waited for', async () => {
  let n = 0;
  assert.equal(await waitFor(() => (++n >= 3 ? n : 0), 1000, 'n', 1), 3);
  await assert.rejects(waitFor(() => false, 50, 'the impossible', 5), /timed out after 50ms waiting for the impossible/);
  await assert.rejects(
    waitFor(() => {
      throw new Error('still broken');
    }, 30, 'x', 5),
    /waiting for x: still broken/,
  );
});

/** A separate node process that builds a pair with sleep running in it, then waits. */
function startChild(prefix: string): { child: ChildProcess; ready: Promise<string[]> } {
  const script = `
    import { createHosts } from ${JSON.stringify(HELPER_URL)};
    const set = await createHosts(2, { prefix: ${JSON.stringify(prefix)} });
    set.hosts[1].spawn(['sleep', '300'], { stdio: 'ignore' });
    console.log(JSON.stringify(set.hosts.map((h) => h.ns)));
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
  const ready = new Promise<string[]>((resolve, reject) => {
    let out = '';
    child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (out.includes('\n')) resolve(JSON.parse(out) as string[]);
    });
    child.once('exit', (c) => reject(new Error(`child exited early (${c})`)));
  });
  return { child, ready };
}

for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  test(`an interrupted run (${sig}) leaves no namespaces behind`, { skip }, async () => {
    const { child, ready } = startChild(`${PREFIX}sig`);
    const names = await ready;
    assert.ok(names.every((n) => listNamespaces().includes(n)));
    const exited = new Promise((r) => child.once('exit', (code, s) => r(s)));
    child.kill(sig);
    assert.equal(await exited, sig, 'the signal still terminates the process');
    assert.deepEqual(listNamespaces().filter((n) => names.includes(n)), []);
  });
}

test('namespaces of a SIGKILLed run are swept by the next run with the prefix', { skip }, async () => {
  const prefix = `${PREFIX}kill`;
  const { child, ready } = startChild(prefix);
  const names = await ready;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
  assert.ok(names.every((n) => listNamespaces().includes(n)), 'no hook can run on SIGKILL');
  assert.deepEqual(sweepStale(prefix).sort(), [...names].sort());
  assert.deepEqual(listNamespaces().filter((n) => names.includes(n)), []);
});
