/** A lease as the subnet manager would deliver it, for tests that feed backends directly. */
import { parseIP4Net } from '../../src/net/ipaddr.js';
import type { Lease } from '../../src/subnet/types.js';

export const makeLease = (subnet: string, publicIP: string): Lease => ({
  subnet: parseIP4Net(subnet),
  ipv6Subnet: null,
  attrs: { publicIP, publicIPv6: null },
  expiration: 0,
  key: `subnets/${subnet.replace('/', '-')}`,
});
