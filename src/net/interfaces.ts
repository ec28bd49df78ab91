/**
 * Choosing the external interface as flannel does: by --iface (name or
 * address, in order), then --iface-regex, else the interface of the default
 * route. PublicIP defaults to that interface's first IPv4 address.
 */

export interface ExternalInterface {
  /** Interface name, e.g. "eth0". */
  name: string;
  index: number;
  mtu: number;
  /** The interface's own IPv4 address (source of encapsulated traffic). */
  ifaceAddr: string;
  /** Address published as PublicIP (--public-ip, else ifaceAddr). */
  extAddr: string;
  ifaceAddr6?: string;
  extAddr6?: string;
}
