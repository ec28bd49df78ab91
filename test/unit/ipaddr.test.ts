import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  formatIP4,
  formatIP6,
  formatIP6Net,
  ip4NetContains,
  ip4NetOverlaps,
  makeSubnetKey,
  parseIP4,
  parseIP4Net,
  parseIP6,
  parseIP6Net,
  parseSubnetKey,
} from '../../src/net/ipaddr.js';

test('IPv4 parse/format round trip and validation', () => {
  for (const s of ['0.0.0.0', '10.5.34.0', '255.255.255.255', '192.0.2.1']) assert.equal(formatIP4(parseIP4(s)), s);
  for (const bad of ['256.1.1.1', '1.2.3', '1.2.3.4.5', 'a.b.c.d', '01.2.3.4', '']) assert.throws(() => parseIP4(bad), /invalid IPv4/);
});

test('IPv4 networks: masking, containment, overlap', () => {
  const n = parseIP4Net('10.5.3.7/16');
  assert.equal(formatIP4(n.ip), '10.5.0.0');
  assert.ok(ip4NetContains(n, parseIP4('10.5.255.255')));
  assert.ok(!ip4NetContains(n, parseIP4('10.6.0.0')));
  assert.ok(ip4NetOverlaps(parseIP4Net('10.5.0.0/16'), parseIP4Net('10.5.34.0/24')));
  assert.ok(!ip4NetOverlaps(parseIP4Net('10.5.33.0/24'), parseIP4Net('10.5.34.0/24')));
  assert.throws(() => parseIP4Net('10.0.0.0/33'), /prefix length/);
  assert.throws(() => parseIP4Net('10.0.0.0'), /expected/);
});

test('IPv6 parse/format canonical forms', () => {
  const cases: [string, string][] = [
    ['fc00::', 'fc00::'],
    ['FC00:0:0:0:0:0:0:1', 'fc00::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['::', '::'],
    ['::ffff:192.0.2.1', '::ffff:c000:201'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
  ];
  for (const [input, want] of cases) assert.equal(formatIP6(parseIP6(input)), want);
  for (const bad of ['1::2::3', 'g::1', '1:2:3:4:5:6:7:8:9', '1:2:3']) assert.throws(() => parseIP6(bad), /invalid IPv6/);
  assert.equal(formatIP6Net(parseIP6Net('fc00:1:2:3::5/48')), 'fc00:1:2::/48');
});

test('lease keys match flannel: 10.5.34.0-24 and the dual-stack form', () => {
  assert.equal(makeSubnetKey(parseIP4Net('10.5.34.0/24'), null), '10.5.34.0-24');
  assert.equal(makeSubnetKey(parseIP4Net('10.5.34.0/24'), parseIP6Net('fc00:0:0:22::/64')), '10.5.34.0-24&fc00:0:0:22::-64');
  const k = parseSubnetKey('/coreos.com/network/subnets/10.5.34.0-24&fc00:0:0:22::-64');
  assert.ok(k);
  assert.equal(formatIP4(k.subnet.ip), '10.5.34.0');
  assert.equal(k.ipv6Subnet && formatIP6Net(k.ipv6Subnet), 'fc00:0:0:22::/64');
  assert.equal(parseSubnetKey('/coreos.com/network/subnets/garbage'), null);
});

test('lease keys must be canonical: one key per subnet', () => {
  assert.ok(parseSubnetKey('10.5.2.0-24'));
  assert.ok(parseSubnetKey('/coreos.com/network/subnets/10.5.2.0-24'));
  for (const bad of ['x10.5.2.0-24', '/p/subnets/x10.5.2.0-24', '10.5.2.9-24', '10.5.02.0-24', '10.5.2.0-024', '10.5.2.0-24&fc00::1-64', '10.5.2.0-24&fc00::-064']) {
    assert.equal(parseSubnetKey(bad), null, bad);
  }
});
