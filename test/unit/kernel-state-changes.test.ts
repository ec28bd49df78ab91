/**
 * Change rounds of the kernel-state applier (applyChanges) against a model
 * of the kernel that executes the planned lines: after any sequence of
 * leases added, changed and removed, the model holds exactly the merged
 * desired state, as it would after a full round; and a change round
 * writes only the changed leases' lines, whatever the number of leases.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { IpRoute } from '../../src/net/iproute.js';
import { KernelStateApplier, type KernelState } from '../../src/net/kernel-state.js';
import { parseIP4Net, parseIP6Net } from '../../src/net/ipaddr.js';
import { createLogger } from '../../src/log.js';

/** The kernel as the lines leave it: fdb by "dev mac", neighbours by "dev ip", routes by dst. */
class ModelKernel {
  fdb = new Map<string, string>();
  neighs = new Map<string, string>();
  routes = new Map<string, string>();

  exec(tool: string, line: string): void {
    const w = line.split(' ');
    if (tool === 'bridge' && w[0] === 'fdb') {
      const key = `${w[4]} ${w[2]}`;
      if (w[1] === 'replace') this.fdb.set(key, w[6]!);
      else if (w[1] === 'del') assert.ok(this.fdb.delete(key), `delete of an absent fdb entry: ${line}`);
    } else if (w[0] === 'neigh') {
      if (w[1] === 'replace') this.neighs.set(`${w[6]} ${w[2]}`, w[4]!);
      else assert.ok(this.neighs.delete(`${w[4]} ${w[2]}`), `delete of an absent neighbour: ${line}`);
    } else if (w[0] === 'route') {
      if (w[1] === 'replace') this.routes.set(w[2]!, w.slice(3).join(' '));
      else assert.ok(this.routes.delete(w[2]!), `delete of an absent route: ${line}`);
    } else assert.fail(`unexpected line ${tool} ${line}`);
  }
}

/** A runner that hands each planned batch to the model. */
class ModelRunner extends IpRoute {
  constructor(
    private readonly tool: string,
    private readonly kernel: ModelKernel,
    readonly planned: string[],
  ) {
    super({ mode: 'plan', binary: tool });
  }
  override async batch(lines: readonly string[]): Promise<{ line: string; message: string }[]> {
    for (const l of lines) {
      this.kernel.exec(this.tool, l);
      this.planned.push(l);
    }
    return [];
  }
}

function peer(i: number, variant: number): KernelState {
  const net = `10.5.${i}.0`;
  const mac = `02:00:00:00:${(i & 255).toString(16).padStart(2, '0')}:${(variant & 255).toString(16).padStart(2, '0')}`;
  return {
    routes: [{ dst: `${net}/24`, via: net, dev: 'flannel.1', onlink: true }],
    neighs: [{ dev: 'flannel.1', ip: net, mac }],
    fdb: [{ dev: 'flannel.1', mac, dst: `192.0.2.${(variant % 200) + 1}` }],
    policies: [],
  };
}

function merged(peers: Map<string, KernelState>): KernelState {
  const s: KernelState = { routes: [], neighs: [], fdb: [], policies: [] };
  for (const [origin, p] of peers) {
    for (const r of p.routes) s.routes.push({ ...r, origin });
    for (const n of p.neighs) s.neighs.push({ ...n, origin });
    for (const f of p.fdb) s.fdb.push({ ...f, origin });
  }
  return s;
}

test('random change rounds leave the model kernel holding exactly the desired state; a round writes only what changed', async () => {
  const kernel = new ModelKernel();
  const planned: string[] = [];
  const ip = new ModelRunner('ip', kernel, planned);
  const bridge = new ModelRunner('bridge', kernel, planned);
  const empty = new IpRoute({ mode: 'plan', planOutputs: {} });
  const applier = new KernelStateApplier({ scope: { network: parseIP4Net('10.5.0.0/16'), routeDevs: ['flannel.1'], ownedDevs: ['flannel.1'] }, readIp: empty, readBridge: empty, writeIp: ip, writeBridge: bridge, log: createLogger('test') });
  const peers = new Map<string, KernelState>();
  for (let i = 0; i < 200; i++) peers.set(`node/n${i}`, peer(i, 0));
  await applier.applyChanges(new Map([...peers].map(([k, v]) => [k, v])), () => merged(peers));
  let seed = 7;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed % n);
  for (let round = 0; round < 200; round++) {
    const changes = new Map<string, KernelState | null>();
    for (let c = 0, n = 1 + rnd(4); c < n; c++) {
      const i = rnd(250);
      const key = `node/n${i}`;
      if (rnd(3) === 0) {
        peers.delete(key);
        changes.set(key, null);
      } else {
        const p = peer(i, 1 + rnd(50));
        peers.set(key, p);
        changes.set(key, p);
      }
    }
    planned.length = 0;
    const r = await applier.applyChanges(changes, () => merged(peers));
    assert.equal(r.failures.length, 0);
    assert.ok(planned.length <= changes.size * 3 + changes.size * 3, `round ${round}: ${planned.length} lines for ${changes.size} changed leases`);
    const want = merged(peers);
    assert.equal(kernel.routes.size, want.routes.length, `round ${round}: routes`);
    for (const rt of want.routes) assert.equal(kernel.routes.get(rt.dst), `via ${rt.via} dev ${rt.dev} onlink`);
    assert.equal(kernel.neighs.size, want.neighs.length);
    for (const n of want.neighs) assert.equal(kernel.neighs.get(`${n.dev} ${n.ip}`), n.mac);
    assert.equal(kernel.fdb.size, want.fdb.length);
    for (const f of want.fdb) assert.equal(kernel.fdb.get(`${f.dev} ${f.mac}`), f.dst);
  }
  // And a full round against what the change rounds left finds nothing to do.
  planned.length = 0;
  await applier.apply(merged(peers), { reread: false });
  assert.deepEqual(planned, []);
});

test('a refused entry in a change round is reported against its lease; the rest of the round applies', async () => {
  const kernel = new ModelKernel();
  const planned: string[] = [];
  const empty = new IpRoute({ mode: 'plan', planOutputs: {} });
  const applier = new KernelStateApplier({
    scope: { network: parseIP4Net('10.5.0.0/16'), routeDevs: ['flannel.1'], ownedDevs: ['flannel.1'] },
    readIp: empty,
    readBridge: empty,
    writeIp: new ModelRunner('ip', kernel, planned),
    writeBridge: new ModelRunner('bridge', kernel, planned),
    log: createLogger('test'),
  });
  const peers = new Map([['node/a', peer(1, 0)]]);
  await applier.applyChanges(new Map(peers), () => merged(peers));
  const bad = peer(2, 0);
  bad.fdb[0]!.dst = '192.0.2.9 dev lo';
  const r = await applier.applyChanges(new Map([['node/b', bad], ['node/c', peer(3, 0)]]), () => merged(peers));
  assert.deepEqual(r.failures.map((f) => f.origin), ['node/b']);
  assert.ok(kernel.routes.has('10.5.3.0/24'));
  assert.ok(![...kernel.fdb.values()].some((d) => d.includes(' ')));
});

test('dual stack: IPv6 routes inside IPv6Network are read and owned beside IPv4 ones; a non-canonical IPv6 token is refused', async () => {
  const planned: string[] = [];
  const reads = new IpRoute({
    mode: 'plan',
    planOutputs: {
      '-4 -json route show table main': JSON.stringify([{ dst: '10.5.9.0/24', gateway: '192.0.2.9', dev: 'eth0', flags: [] }]),
      // One of ours to remove, one outside IPv6Network (never touched), the link's own /64 (never touched).
      '-6 -json route show table main': JSON.stringify([
        { dst: 'fd00:5:9::/64', gateway: '2001:db8::9', dev: 'eth0', flags: [] },
        { dst: 'fd99::/64', gateway: '2001:db8::9', dev: 'eth0', flags: [] },
        { dst: '2001:db8::/64', dev: 'eth0', flags: [] },
      ]),
    },
  });
  const kernel = new ModelKernel();
  kernel.routes.set('10.5.9.0/24', 'via 192.0.2.9 dev eth0');
  kernel.routes.set('fd00:5:9::/64', 'via 2001:db8::9 dev eth0');
  const applier = new KernelStateApplier({
    scope: { network: parseIP4Net('10.5.0.0/16'), network6: parseIP6Net('fd00::/16'), routeDevs: ['eth0'], ownedDevs: [] },
    readIp: reads,
    readBridge: reads,
    writeIp: new ModelRunner('ip', kernel, planned),
    writeBridge: new ModelRunner('bridge', kernel, planned),
    log: createLogger('test'),
  });
  const r = await applier.apply(
    {
      routes: [
        { dst: '10.5.9.0/24', via: '192.0.2.9', dev: 'eth0', origin: 'a' },
        { dst: 'fd00:5:2::/64', via: '2001:db8::2', dev: 'eth0', origin: 'b' },
        { dst: 'fd00:5:3::/64', via: '2001:db8::3 dev lo', dev: 'eth0', origin: 'c' },
        { dst: 'fd00:5:4::/64', via: '192.0.2.4', dev: 'eth0', origin: 'd' },
      ],
      neighs: [],
      fdb: [],
    },
    { reread: true },
  );
  assert.deepEqual(planned.sort(), ['route del fd00:5:9::/64 dev eth0', 'route replace fd00:5:2::/64 via 2001:db8::2 dev eth0'].sort());
  assert.deepEqual(r.failures.map((f) => f.origin).sort(), ['c', 'd']);
});
