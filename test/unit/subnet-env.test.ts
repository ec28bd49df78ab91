import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseNetworkConfig } from '../../src/config/network.js';
import { parseIP4Net, parseIP6Net } from '../../src/net/ipaddr.js';
import { readPreviousSubnets, renderSubnetEnv, writeSubnetEnv } from '../../src/subnet/subnet-env.js';
import type { Lease } from '../../src/subnet/types.js';

const lease = (sn: string, sn6?: string): Lease => ({
  subnet: parseIP4Net(sn),
  ipv6Subnet: sn6 ? parseIP6Net(sn6) : null,
  attrs: { publicIP: '192.0.2.2', publicIPv6: null },
  expiration: 0,
  key: 'x',
});

test('subnet.env is byte-identical to flannel for udp on a 1500-byte link', () => {
  const cfg = parseNetworkConfig('{"Network":"10.5.0.0/16","Backend":{"Type":"udp"}}');
  assert.equal(
    renderSubnetEnv(cfg, lease('10.5.81.0/24'), 1472, false),
    'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.81.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n',
  );
});

test('subnet.env with IPv6', () => {
  const cfg = parseNetworkConfig('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}');
  assert.equal(
    renderSubnetEnv(cfg, lease('10.5.81.0/24', 'fc00:0:0:5::/64'), 1450, true),
    'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.81.1/24\nFLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:5::1/64\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n',
  );
});

test('written atomically (no temp file left) and read back as the previous subnet', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'fts-env-'));
  try {
    const path = join(dir, 'sub', 'subnet.env');
    const cfg = parseNetworkConfig('{"Network":"10.5.0.0/16"}');
    await writeSubnetEnv(path, renderSubnetEnv(cfg, lease('10.5.81.0/24'), 1472, false));
    assert.match(await readFile(path, 'utf8'), /FLANNEL_SUBNET=10.5.81.1\/24/);
    assert.deepEqual(await readdir(join(dir, 'sub')), ['subnet.env']);
    const prev = await readPreviousSubnets(path);
    assert.deepEqual(prev.subnet, parseIP4Net('10.5.81.0/24'));
    assert.deepEqual(await readPreviousSubnets(join(dir, 'missing')), { subnet: null, ipv6Subnet: null });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
