import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ConfigError, parseNetworkConfig } from '../../src/config/network.js';
import { formatIP4, formatIP6 } from '../../src/net/ipaddr.js';

/** The registry's types, as the daemon passes them. */
const backendTypes = ['udp', 'alloc', 'vxlan'];

test('defaults follow flannel: SubnetLen 24, SubnetMin second subnet, SubnetMax last, Backend udp', () => {
  const c = parseNetworkConfig('{"Network":"10.5.0.0/16"}');
  assert.equal(c.subnetLen, 24);
  assert.equal(formatIP4(c.subnetMin), '10.5.1.0');
  assert.equal(formatIP4(c.subnetMax), '10.5.255.0');
  assert.equal(c.backendType, 'udp');
  assert.equal(c.enableIPv4, true);
  assert.equal(c.enableIPv6, false);
});

test('small networks get SubnetLen = prefix + 2', () => {
  const c = parseNetworkConfig('{"Network":"10.5.0.0/26"}');
  assert.equal(c.subnetLen, 28);
  assert.equal(formatIP4(c.subnetMin), '10.5.0.16');
  assert.equal(formatIP4(c.subnetMax), '10.5.0.48');
});

test('backend options are kept verbatim and field names are case-insensitive as in Go', () => {
  const c = parseNetworkConfig('{"network":"10.20.0.0/16","backend":{"Type":"udp","Port":8300}}');
  assert.equal(c.backendType, 'udp');
  assert.deepEqual(c.backend, { Type: 'udp', Port: 8300 });
});

test('IPv6 defaults', () => {
  const c = parseNetworkConfig('{"EnableIPv6":true,"Network":"10.5.0.0/16","IPv6Network":"fc00::/48"}');
  assert.equal(c.ipv6SubnetLen, 64);
  assert.equal(formatIP6(c.ipv6SubnetMin), 'fc00:0:0:1::');
  assert.equal(formatIP6(c.ipv6SubnetMax), 'fc00:0:0:ffff::');
});

const invalid: [string, string, RegExp][] = [
  ['{"Network":', '(document)', /malformed JSON/],
  ['[1,2]', '(document)', /JSON object/],
  ['{}', 'Network', /missing/],
  ['{"Network":"10.5.0.0"}', 'Network', /expected/],
  ['{"Network":"10.5.0.300/16"}', 'Network', /invalid IPv4/],
  ['{"Network":16}', 'Network', /must be a string/],
  ['{"Network":"10.5.0.0/30"}', 'Network', /too small/],
  ['{"Network":"10.5.0.0/16","SubnetLen":31}', 'SubnetLen', /too long/],
  ['{"Network":"10.5.0.0/16","SubnetLen":17}', 'SubnetLen', /too short/],
  ['{"Network":"10.5.0.0/16","SubnetLen":"24"}', 'SubnetLen', /must be a number/],
  ['{"Network":"10.5.0.0/16","SubnetMin":"10.6.0.0"}', 'SubnetMin', /outside Network/],
  ['{"Network":"10.5.0.0/16","SubnetMax":"10.4.0.0"}', 'SubnetMax', /outside Network/],
  ['{"Network":"10.5.0.0/16","SubnetMin":"10.5.1.7"}', 'SubnetMin', /boundary/],
  ['{"Network":"10.5.0.0/16","SubnetMax":"10.5.1.7"}', 'SubnetMax', /boundary/],
  ['{"Network":"10.5.0.0/16","SubnetMin":"10.5.9.0","SubnetMax":"10.5.3.0"}', 'SubnetMin', /above SubnetMax/],
  ['{"Network":"10.5.0.0/16","Backend":{"Type":"nope"}}', 'Backend.Type', /unknown backend type "nope"/],
  ['{"Network":"10.5.0.0/16","Backend":{}}', 'Backend.Type', /missing/],
  ['{"Network":"10.5.0.0/16","Backend":"udp"}', 'Backend', /JSON object/],
  ['{"Network":"10.5.0.0/16","Bogus":1}', 'Bogus', /unknown field/],
  ['{"EnableIPv4":false}', 'EnableIPv4', /at least one/],
  ['{"Network":"10.5.0.0/16","EnableIPv6":true}', 'IPv6Network', /missing/],
  ['{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/126"}', 'IPv6Network', /too small/],
  ['{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetLen":49}', 'IPv6SubnetLen', /too short/],
  ['{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":"fc01::"}', 'IPv6SubnetMin', /outside/],
];

for (const [json, fieldName, reason] of invalid) {
  test(`rejects ${json} (${fieldName})`, () => {
    assert.throws(
      () => parseNetworkConfig(json, { backendTypes }),
      (err: unknown) => err instanceof ConfigError && err.field === fieldName && reason.test(err.message) && err.message.includes(fieldName),
    );
  });
}
