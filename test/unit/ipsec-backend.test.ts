/**
 * The ipsec backend's parts without charon or the kernel: options and PSK
 * validation, the connection definition, shared key and policies computed
 * for a lease, `ip xfrm policy` parsing and the applier's policy diff, the
 * strongswan.conf written for charon, charon's log lines, and the VICI
 * reconciliation against a fake charon.
 */
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseIpsecOptions, ipsecHostSettings, DEFAULT_ESP_PROPOSAL } from '../../src/backend/ipsec/options.js';
import { connectionDefinition, connectionName, childName, policiesFor, sharedKeyMessage, tunnelEnd } from '../../src/backend/ipsec/connection.js';
import { strongswanConf, findCharon } from '../../src/backend/ipsec/charon.js';
import { CharonLog, parseCharonLine } from '../../src/backend/ipsec/charon-log.js';
import { IkeConnections } from '../../src/backend/ipsec/ike-connections.js';
import { parseXfrmPolicies } from '../../src/net/xfrm-policy.js';
import { KernelStateApplier } from '../../src/net/kernel-state.js';
import { IpRoute } from '../../src/net/iproute.js';
import { parseIP4Net } from '../../src/net/ipaddr.js';
import { ViciClient } from '../../src/vici/client.js';
import { createLogger, setLogSink } from '../../src/log.js';
import { startFakeCharon } from '../helpers/fake-charon.js';

const PSK = 'p'.repeat(96);
const dir = await mkdtemp(join(tmpdir(), 'fts-ipsec-'));
after(() => rm(dir, { recursive: true, force: true }));
const log = createLogger('test');
const local = { publicIP: '192.0.2.1', subnet: '10.5.1.0/24' };
const remote = { publicIP: '192.0.2.2', subnet: '10.5.2.0/24' };

test('options: flannel defaults, Go-style names, PSK checked without echoing it', () => {
  assert.deepEqual(parseIpsecOptions({ Type: 'ipsec', PSK }), { psk: PSK, udpEncap: false, espProposal: DEFAULT_ESP_PROPOSAL });
  assert.deepEqual(parseIpsecOptions({ psk: PSK, udpencap: true, espproposal: 'aes256gcm16-sha256-ecp384' }), { psk: PSK, udpEncap: true, espProposal: 'aes256gcm16-sha256-ecp384' });
  const short = 'hunter2-secret-'.repeat(6); // 90 characters
  assert.throws(() => parseIpsecOptions({ PSK: short }), (e: Error) => /PSK is too short: 90 characters, at least 96 needed/.test(e.message) && !e.message.includes('hunter2'));
  assert.throws(() => parseIpsecOptions({}), /PSK is required/);
  assert.throws(() => parseIpsecOptions({ PSK: 12345 }), (e: Error) => /PSK must be a string/.test(e.message) && !e.message.includes('12345'));
  assert.throws(() => parseIpsecOptions({ PSK, UDPEncap: 'yes' }), /UDPEncap must be true or false/);
  assert.throws(() => parseIpsecOptions({ PSK, ESPProposal: 'aes128 gcm; rm -rf' }), /ESPProposal must be a strongSwan ESP proposal/);
  assert.deepEqual(ipsecHostSettings({}), { charonPath: null, runDir: '/run/flannel/ipsec', esp: 'auto' });
  assert.deepEqual(ipsecHostSettings({ FLANNEL_IPSEC_CHARON: '/opt/charon', FLANNEL_IPSEC_RUN_DIR: '/run/h1', FLANNEL_IPSEC_ESP: 'kernel' }), { charonPath: '/opt/charon', runDir: '/run/h1', esp: 'kernel' });
  assert.throws(() => ipsecHostSettings({ FLANNEL_IPSEC_ESP: 'fast' }), /FLANNEL_IPSEC_ESP must be auto, kernel or userspace/);
});

test('the connection, shared key and policies computed for a lease are flannel\'s', () => {
  const end = tunnelEnd({ subnet: parseIP4Net('10.5.2.0/24'), attrs: { publicIP: '192.0.2.2' } });
  assert.deepEqual(end, remote);
  assert.equal(connectionName(local, remote), '192.0.2.1-10.5.1.0/24-10.5.2.0/24-192.0.2.2');
  assert.equal(childName(local, remote), '10.5.1.0/24-10.5.2.0/24');
  assert.deepEqual(connectionDefinition(local, remote, { udpEncap: false, espProposal: DEFAULT_ESP_PROPOSAL }, 'kernel'), {
    '192.0.2.1-10.5.1.0/24-10.5.2.0/24-192.0.2.2': {
      local_addrs: ['192.0.2.1'],
      remote_addrs: ['192.0.2.2'],
      proposals: ['aes256-sha256-modp4096'],
      version: '2',
      keyingtries: '0',
      encap: 'no',
      local: { auth: 'psk' },
      remote: { auth: 'psk' },
      children: {
        '10.5.1.0/24-10.5.2.0/24': {
          local_ts: ['10.5.1.0/24'],
          remote_ts: ['10.5.2.0/24'],
          esp_proposals: ['aes128gcm16-sha256-prfsha256-ecp256'],
          start_action: 'start',
          close_action: 'trap',
          dpd_action: 'restart',
          mode: 'tunnel',
          reqid: '11',
          rekey_time: '1h',
          policies: 'no',
        },
      },
    },
  });
  const user = connectionDefinition(local, remote, { udpEncap: true, espProposal: 'aes256gcm16' }, 'userspace') as Record<string, any>;
  const conn = user['192.0.2.1-10.5.1.0/24-10.5.2.0/24-192.0.2.2'];
  assert.equal(conn.encap, 'yes');
  assert.equal(conn.children['10.5.1.0/24-10.5.2.0/24'].policies, 'yes', 'libipsec keeps its own SPD');
  assert.equal(conn.children['10.5.1.0/24-10.5.2.0/24'].reqid, undefined, 'libipsec: a reqid per peer, from charon');
  assert.deepEqual(conn.children['10.5.1.0/24-10.5.2.0/24'].esp_proposals, ['aes256gcm16']);
  assert.deepEqual(sharedKeyMessage('192.0.2.2', PSK), { id: 'flannel-192.0.2.2', type: 'IKE', data: PSK, owners: ['192.0.2.2'] });
  assert.deepEqual(policiesFor(local, remote), [
    { src: '10.5.1.0/24', dst: '10.5.2.0/24', dir: 'out', tmplSrc: '192.0.2.1', tmplDst: '192.0.2.2', reqid: 11 },
    { src: '10.5.2.0/24', dst: '10.5.1.0/24', dir: 'in', tmplSrc: '192.0.2.2', tmplDst: '192.0.2.1', reqid: 11 },
    { src: '10.5.2.0/24', dst: '10.5.1.0/24', dir: 'fwd', tmplSrc: '192.0.2.2', tmplDst: '192.0.2.1', reqid: 11 },
  ]);
});

const SPD = [
  'src 10.5.2.0/24 dst 10.5.1.0/24 ',
  '\tdir fwd priority 0 ptype main ',
  '\ttmpl src 192.0.2.2 dst 192.0.2.1',
  '\t\tproto esp reqid 11 mode tunnel',
  'src 10.5.9.0/24 dst 10.5.1.0/24 ',
  '\tdir in priority 0 ptype main ',
  '\ttmpl src 192.0.2.9 dst 192.0.2.1',
  '\t\tproto esp reqid 11 mode tunnel',
  'src 10.5.1.0/24 dst 10.5.2.0/24 ',
  '\tdir out priority 0 ptype main ',
  '\ttmpl src 192.0.2.1 dst 192.0.2.7',
  '\t\tproto esp reqid 11 mode tunnel',
  // An operator's policy (other reqid), one outside the Network, one with a mark, and charon's socket bypasses: never ours.
  'src 10.5.3.0/24 dst 10.5.1.0/24 ',
  '\tdir in priority 0 ptype main ',
  '\ttmpl src 192.0.2.3 dst 192.0.2.1',
  '\t\tproto esp reqid 77 mode tunnel',
  'src 172.16.0.0/24 dst 10.5.1.0/24 ',
  '\tdir in priority 0 ptype main ',
  '\ttmpl src 192.0.2.4 dst 192.0.2.1',
  '\t\tproto esp reqid 11 mode tunnel',
  'src 10.5.4.0/24 dst 10.5.1.0/24 ',
  '\tdir in priority 0 ptype main ',
  '\tmark 0x1/0xffffffff ',
  '\ttmpl src 192.0.2.4 dst 192.0.2.1',
  '\t\tproto esp reqid 11 mode tunnel',
  'src 0.0.0.0/0 dst 0.0.0.0/0 ',
  '\tsocket in priority 0 ptype main ',
  '',
].join('\n');

test('ip xfrm policy show: only policies of flannel\'s shape are parsed', () => {
  const got = parseXfrmPolicies(SPD);
  assert.deepEqual(
    got.map((p) => `${p.src} ${p.dst} ${p.dir} ${p.tmplSrc}>${p.tmplDst} ${p.reqid}`),
    ['10.5.2.0/24 10.5.1.0/24 fwd 192.0.2.2>192.0.2.1 11', '10.5.9.0/24 10.5.1.0/24 in 192.0.2.9>192.0.2.1 11', '10.5.1.0/24 10.5.2.0/24 out 192.0.2.1>192.0.2.7 11', '10.5.3.0/24 10.5.1.0/24 in 192.0.2.3>192.0.2.1 77', '172.16.0.0/24 10.5.1.0/24 in 192.0.2.4>192.0.2.1 11'],
  );
  assert.deepEqual(parseXfrmPolicies(''), []);
  assert.deepEqual(parseXfrmPolicies('garbage\n\tmore garbage\n'), []);
});

test('the applier makes the SPD hold exactly the wanted policies, in one batch, and nothing when it already does', async () => {
  const read = new IpRoute({ mode: 'plan', planOutputs: { 'xfrm policy show': SPD, '-4 -json route show table main': '[]' } });
  const write = new IpRoute({ mode: 'plan' });
  const applier = new KernelStateApplier({
    scope: { network: parseIP4Net('10.5.0.0/16'), routeDevs: [], ownedDevs: [], xfrmReqid: 11 },
    readIp: read,
    readBridge: read,
    writeIp: write,
    writeBridge: new IpRoute({ mode: 'plan' }),
    log,
  });
  const r = await applier.apply({ routes: [], neighs: [], fdb: [], policies: policiesFor(local, remote) });
  assert.deepEqual(r.lines, [
    'ip xfrm policy delete src 10.5.9.0/24 dst 10.5.1.0/24 dir in',
    'ip xfrm policy update src 10.5.1.0/24 dst 10.5.2.0/24 dir out tmpl src 192.0.2.1 dst 192.0.2.2 proto esp reqid 11 mode tunnel',
    'ip xfrm policy update src 10.5.2.0/24 dst 10.5.1.0/24 dir in tmpl src 192.0.2.2 dst 192.0.2.1 proto esp reqid 11 mode tunnel',
  ]);
  // The next event round trusts what it left: no change, no write.
  assert.deepEqual((await applier.apply({ routes: [], neighs: [], fdb: [], policies: policiesFor(local, remote) }, { reread: false })).lines, []);
  // A peer gone: its three policies go.
  assert.equal((await applier.apply({ routes: [], neighs: [], fdb: [], policies: [] }, { reread: false })).lines.filter((l) => l.includes('policy delete')).length, 3);
  // Without a reqid in the scope the SPD is not even read.
  const noXfrm = new IpRoute({ mode: 'plan', planOutputs: { '-4 -json route show table main': '[]' } });
  await new KernelStateApplier({ scope: { network: parseIP4Net('10.5.0.0/16'), routeDevs: [], ownedDevs: [] }, readIp: noXfrm, readBridge: noXfrm, writeIp: write, writeBridge: write, log }).apply({ routes: [], neighs: [], fdb: [] });
  assert.ok(!noXfrm.lines().some((l) => l.includes('xfrm')));
});

test('strongswan.conf: our socket, only the plugins we need, no routes of charon\'s', () => {
  const k = strongswanConf('kernel', '/run');
  assert.match(k, /vici \{ socket = unix:\/\/\/run\/charon\.vici \}/);
  assert.match(k, /install_routes = no/);
  assert.match(strongswanConf('userspace', '/run'), /install_routes = no/, 'flanneld routes into ipsec0 itself');
  assert.match(k, /load = .*\bkernel-netlink\b.*\bvici\b/);
  assert.doesNotMatch(k, /kernel-libipsec/);
  const u = strongswanConf('userspace', '/run');
  assert.match(u, /load = .*kernel-libipsec kernel-netlink/);

});

test('findCharon: an explicit path must exist; otherwise flannel\'s list, PATH first', async () => {
  await assert.rejects(findCharon(join(dir, 'nope')), /charon not found at .*nope \(FLANNEL_IPSEC_CHARON\); install strongswan-charon/);
  const bin = join(dir, 'bin');
  await rm(bin, { recursive: true, force: true });
  await mkdir(bin);
  await writeFile(join(bin, 'charon'), '#!/bin/sh\n');
  await chmod(join(bin, 'charon'), 0o755);
  assert.equal(await findCharon(null, bin), join(bin, 'charon'));
  assert.equal(await findCharon(join(bin, 'charon')), join(bin, 'charon'));
  await assert.rejects(findCharon(null, '', []), /charon \(strongSwan's IKE daemon\) not found.*install strongswan-charon/);
});

test("charon's lines: parsed, levelled, and a refused SA reported with the kernel's reason", () => {
  assert.deepEqual(parseCharonLine('10[KNL] <a-b|2> received netlink error: Function not implemented (38)'), { thread: '10', group: 'KNL', connection: 'a-b', text: 'received netlink error: Function not implemented (38)' });
  assert.deepEqual(parseCharonLine('11[IKE] <2> 192.0.2.2 is initiating an IKE_SA'), { thread: '11', group: 'IKE', connection: null, text: '192.0.2.2 is initiating an IKE_SA' });
  assert.equal(parseCharonLine('not a charon line'), null);
  const lines: string[] = [];
  setLogSink((l) => lines.push(l));
  const failures: [string | null, string | null][] = [];
  const cl = new CharonLog(createLogger('charon'), (c, r) => failures.push([c, r]));
  cl.line('00[DMN] Starting IKE charon daemon (strongSwan 5.9.8)');
  cl.line('10[KNL] <conn-1|2> received netlink error: Function not implemented (38)');
  cl.line('07[KNL] <conn-2|3> received netlink error: No buffer space available (105)');
  cl.line('10[KNL] <conn-1|2> unable to add SAD entry with SPI c07682c3 (FAILED)');
  cl.line('10[IKE] <conn-1|2> unable to install inbound and outbound IPsec SA (SAD) in kernel');
  cl.line('12[IKE] <conn-3|4> unable to install inbound and outbound IPsec SA (SAD) in kernel');
  setLogSink((l) => process.stderr.write(l + '\n'));
  assert.deepEqual(failures, [
    ['conn-1', 'Function not implemented (38)'],
    ['conn-3', null],
  ]);
  assert.match(lines[0]!, /^INFO .*\[charon\] 00\[DMN\] Starting IKE charon daemon/);
  assert.match(lines[1]!, /^WARN .*received netlink error/);
});

test('IkeConnections against a fake charon: keys before connections, only differences, departures unloaded, reload after a restart', async () => {
  const fake = await startFakeCharon(dir);
  const conns = new IkeConnections({ psk: PSK, udpEncap: false, espProposal: DEFAULT_ESP_PROPOSAL }, 'kernel', () => ViciClient.connect(fake.path, 2000), log);
  const third = { publicIP: '192.0.2.3', subnet: '10.5.3.0/24' };
  assert.equal(await conns.apply(local, [remote, third]), 5);
  assert.deepEqual(fake.log, ['load-shared flannel-192.0.2.1', 'load-shared flannel-192.0.2.2', 'load-shared flannel-192.0.2.3', 'load-conn 192.0.2.1-10.5.1.0/24-10.5.2.0/24-192.0.2.2', 'load-conn 192.0.2.1-10.5.1.0/24-10.5.3.0/24-192.0.2.3']);
  assert.equal(fake.keys.get('flannel-192.0.2.2')?.data, PSK);
  fake.log.length = 0;
  assert.equal(await conns.apply(local, [remote, third]), 0, 'a quiet round changes nothing');
  assert.deepEqual(fake.log, []);

  fake.sas.set('192.0.2.1-10.5.1.0/24-10.5.3.0/24-192.0.2.3', { state: 'ESTABLISHED', children: ['INSTALLED'] });
  fake.sas.set('192.0.2.1-10.5.1.0/24-10.5.2.0/24-192.0.2.2', { state: 'ESTABLISHED', children: [] });
  const counts = await conns.refreshSas();
  assert.deepEqual([...counts.ike], [['ESTABLISHED', 2]]);
  assert.deepEqual([...counts.child], [['INSTALLED', 1]]);
  // Both ends initiated at once: a second IKE SA of the same connection carries its CHILD_SA; the connection has one.
  fake.duplicateSas.push({ name: '192.0.2.1-10.5.1.0/24-10.5.2.0/24-192.0.2.2', state: 'ESTABLISHED', children: ['INSTALLED'] });
  await conns.refreshSas();
  assert.deepEqual(conns.peerSas().get('192.0.2.1-10.5.1.0/24-10.5.2.0/24-192.0.2.2')?.children, ['INSTALLED']);
  fake.duplicateSas.length = 0;
  await conns.refreshSas();

  assert.equal(await conns.apply(local, [remote]), 2);
  assert.deepEqual(fake.log, ['unload-conn 192.0.2.1-10.5.1.0/24-10.5.3.0/24-192.0.2.3', 'terminate 192.0.2.1-10.5.1.0/24-10.5.3.0/24-192.0.2.3', 'unload-shared flannel-192.0.2.3']);
  assert.ok(!fake.sas.has('192.0.2.1-10.5.1.0/24-10.5.3.0/24-192.0.2.3'), 'its IKE SA is torn down too');

  // charon restarted: it holds nothing; the next round loads everything again.
  fake.conns.clear();
  fake.keys.clear();
  fake.log.length = 0;
  conns.forget();
  assert.equal(await conns.apply(local, [remote]), 3);
  assert.deepEqual(fake.log, ['load-shared flannel-192.0.2.1', 'load-shared flannel-192.0.2.2', 'load-conn 192.0.2.1-10.5.1.0/24-10.5.2.0/24-192.0.2.2']);
  // Keys someone else loaded (no flannel- id) are not ours to remove.
  fake.keys.set('operator-key', { id: 'operator-key' });
  assert.equal(await conns.apply(local, [remote]), 0);
  assert.ok(fake.keys.has('operator-key'));
  await fake.close();
});

test('IkeConnections.checkProposal: a proposal charon refuses is a config error naming ESPProposal; the probe is unloaded', async () => {
  const fake = await startFakeCharon(dir, 'probe.vici');
  const bad = new IkeConnections({ psk: PSK, udpEncap: false, espProposal: 'bogus128' }, 'kernel', () => ViciClient.connect(fake.path, 2000), log);
  await assert.rejects(bad.checkProposal(local), /invalid ipsec backend config: ESPProposal "bogus128" refused by charon: charon refused load-conn: invalid value for: esp_proposals/);
  const good = new IkeConnections({ psk: PSK, udpEncap: false, espProposal: DEFAULT_ESP_PROPOSAL }, 'kernel', () => ViciClient.connect(fake.path, 2000), log);
  await good.checkProposal(local);
  assert.equal(fake.conns.size, 0, 'probe unloaded');
  const probe = fake.log.find((l) => l.startsWith('load-conn'));
  assert.ok(probe);
  await fake.close();
});
