import { test } from 'node:test';
import assert from 'node:assert/strict';
import { selectExternalInterface, type LinkInfo } from '../../src/net/interfaces.js';

const links: LinkInfo[] = [
  { ifindex: 1, ifname: 'lo', mtu: 65536, addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host' }] },
  {
    ifindex: 2,
    ifname: 'eth0',
    mtu: 1500,
    addr_info: [
      { family: 'inet', local: '192.0.2.2', prefixlen: 24 },
      { family: 'inet', local: '192.0.2.20', prefixlen: 24 },
      { family: 'inet6', local: 'fd00::2', prefixlen: 64, scope: 'global' },
    ],
  },
  { ifindex: 3, ifname: 'ens5', mtu: 9001, addr_info: [{ family: 'inet', local: '198.18.0.5', prefixlen: 16 }] },
  { ifindex: 4, ifname: 'dummy0', mtu: 1500, addr_info: [] },
];
const none = { iface: [], ifaceRegex: [], ifaceCanReach: '', publicIP: '', publicIPv6: '' };

test('--iface by name: first IPv4 address, MTU, index; PublicIP defaults to it', async () => {
  const e = await selectExternalInterface({ ...none, iface: ['ens5'] }, links);
  assert.deepEqual([e.name, e.index, e.mtu, e.ifaceAddr, e.extAddr], ['ens5', 3, 9001, '198.18.0.5', '198.18.0.5']);
});

test('--iface by address picks that address; entries are tried in order', async () => {
  const e = await selectExternalInterface({ ...none, iface: ['nope0', '192.0.2.20'] }, links);
  assert.equal(e.name, 'eth0');
  assert.equal(e.ifaceAddr, '192.0.2.20');
  assert.equal(e.extAddr6, 'fd00::2');
});

test('--public-ip overrides the published address, not the interface address', async () => {
  const e = await selectExternalInterface({ ...none, iface: ['eth0'], publicIP: '203.0.113.7' }, links);
  assert.equal(e.ifaceAddr, '192.0.2.2');
  assert.equal(e.extAddr, '203.0.113.7');
  await assert.rejects(selectExternalInterface({ ...none, iface: ['eth0'], publicIP: 'x.y' }, links), /--public-ip "x\.y" is not an IPv4 address/);
});

test('--iface-regex matches names or addresses, after --iface', async () => {
  assert.equal((await selectExternalInterface({ ...none, ifaceRegex: ['^ens'] }, links)).name, 'ens5');
  const byAddr = await selectExternalInterface({ ...none, ifaceRegex: ['^192\\.0\\.2\\.2\\d$'] }, links);
  assert.deepEqual([byAddr.name, byAddr.ifaceAddr], ['eth0', '192.0.2.20']);
  assert.equal((await selectExternalInterface({ ...none, iface: ['missing'], ifaceRegex: ['^eth'] }, links)).name, 'eth0');
});

test('clear errors when nothing matches or the interface has no IPv4 address', async () => {
  await assert.rejects(selectExternalInterface({ ...none, iface: ['wlan9'] }, links), /none of --iface wlan9 matches an interface on this host \(have: lo, eth0, ens5, dummy0\)/);
  await assert.rejects(selectExternalInterface({ ...none, ifaceRegex: ['^zz'] }, links), /no interface matches --iface-regex \^zz/);
  await assert.rejects(selectExternalInterface({ ...none, iface: ['dummy0'] }, links), /interface dummy0 has no IPv4 address/);
});

test('an IPv6-only network needs no IPv4 address; EnableIPv6 needs a global IPv6 one', async () => {
  const v6links: LinkInfo[] = [...links, { ifindex: 5, ifname: 'v6only0', mtu: 1500, addr_info: [{ family: 'inet6', local: '2001:db8::5', prefixlen: 64, scope: 'global' }] }];
  const v6only = { ipv4: false, ipv6: true };
  const e = await selectExternalInterface({ ...none, iface: ['v6only0'] }, v6links, v6only);
  assert.deepEqual([e.name, e.ifaceAddr, e.extAddr, e.ifaceAddr6, e.extAddr6], ['v6only0', '', '', '2001:db8::5', '2001:db8::5']);
  assert.equal((await selectExternalInterface({ ...none, ifaceRegex: ['^2001:db8::5$'] }, v6links, v6only)).name, 'v6only0');
  await assert.rejects(selectExternalInterface({ ...none, iface: ['v6only0'] }, v6links), /interface v6only0 has no IPv4 address/);
  await assert.rejects(selectExternalInterface({ ...none, iface: ['ens5'] }, v6links, { ipv4: true, ipv6: true }), /interface ens5 has no global IPv6 address, and EnableIPv6 needs one \(or pass --public-ipv6\)/);
  const pinned = await selectExternalInterface({ ...none, iface: ['ens5'], publicIPv6: '2001:db8::99' }, v6links, { ipv4: true, ipv6: true });
  assert.equal(pinned.extAddr6, '2001:db8::99');
});
