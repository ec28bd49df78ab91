/**
 * The leases the lease benches write, by number: lease i is
 * 10.(i >> 8).(i & 255).0/24 with PublicIP 198.18.(i >> 8).(i & 255); on a
 * dual-stack network also fd00:0:0:<i>::/64 with PublicIPv6 2001:db8:1::<i>
 * (canonical text, as flannel writes it).
 */
import { formatIP6 } from '../src/net/ipaddr.js';

export const DUAL_STACK_IPV6_NETWORK = 'fd00::/48';

const subnet6 = (i: number) => formatIP6((0xfd00n << 112n) | (BigInt(i) << 64n));
const public6 = (i: number) => formatIP6((0x20010db80001n << 80n) | BigInt(i));

/** Store key below PREFIX/subnets/ (flannel's: "10.0.5.0-24", dual stack "10.0.5.0-24&fd00:0:0:5::-64"). */
export function leaseKeyName(i: number, dualStack: boolean): string {
  const v4 = `10.${i >> 8}.${i & 255}.0-24`;
  return dualStack ? `${v4}&${subnet6(i)}-64` : v4;
}

/** Lease JSON as flanneld writes it; vxlan adds BackendData (and BackendV6Data on dual stack) with a VtepMAC made from i. */
export function leaseValue(i: number, backend: string | undefined, dualStack: boolean): string {
  const a = i >> 8;
  const b = i & 255;
  const hex = (v: number) => v.toString(16).padStart(2, '0');
  const data = (first: string) => `{"VNI":1,"VtepMAC":"${first}:42:00:00:${hex(a)}:${hex(b)}"}`;
  const v6 = dualStack ? `"${public6(i)}"` : 'null';
  const extra = backend === 'vxlan' ? `,"BackendType":"vxlan","BackendData":${data('02')}${dualStack ? `,"BackendV6Data":${data('06')}` : ''}` : '';
  return `{"PublicIP":"198.18.${a}.${b}","PublicIPv6":${v6}${extra}}`;
}
