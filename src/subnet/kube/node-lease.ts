/**
 * A Node object as a lease, and our own lease as node annotations, exactly
 * as flannel reads and writes them (subnet/kube/kube.go): the node's
 * podCIDRs are its subnets, the annotations its PublicIP(v6), BackendType
 * and BackendData. Annotations are text any node's flanneld (or anyone
 * allowed to patch nodes) writes, so they are decoded strictly, as etcd
 * lease values are: addresses only in canonical form, BackendData only as
 * JSON, BackendType only as a backend name. A node whose text is refused is
 * skipped and counted by reason, never fatal.
 */
import { isCanonicalIP4, isCanonicalIP6, isCanonicalNet4, isCanonicalNet6 } from '../../net/canonical.js';
import { parseIP4Net, parseIP6Net, type IP4Net, type IP6Net } from '../../net/ipaddr.js';
import { BACKEND_TYPE_RE, LeaseDecodeError } from '../lease-codec.js';
import type { Lease, LeaseAttrs } from '../types.js';
import type { AnnotationKeys } from './annotations.js';

/**
 * What the daemon keeps of a Node: its name, creation time, podCIDRs and
 * the annotations under our prefix. Real nodes carry tens of kilobytes of
 * status (images, addresses, conditions); keeping only this is what holds
 * a 5,000-node cluster in a few megabytes.
 */
export interface SlimNode {
  name: string;
  /** metadata.creationTimestamp in ms (0 when absent): of two nodes claiming one subnet, the older wins. */
  created: number;
  podCIDRs: string[];
  annotations: Record<string, string>;
}

/** The parts of a v1.Node the daemon reads. */
export interface NodeObject {
  metadata?: { name?: string; creationTimestamp?: string; annotations?: Record<string, string> | null; resourceVersion?: string };
  spec?: { podCIDR?: string; podCIDRs?: string[] | null } | null;
}

/** Node names are DNS subdomains (the API server checks); anything else is never used as a lease key. */
const NODE_NAME_RE = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;

export function isNodeName(text: string): boolean {
  return NODE_NAME_RE.test(text);
}

export function slimNode(obj: NodeObject, keys: AnnotationKeys): SlimNode | null {
  const name = obj.metadata?.name;
  if (typeof name !== 'string' || !isNodeName(name)) return null;
  const all = obj.metadata?.annotations ?? {};
  const annotations: Record<string, string> = {};
  for (const k of Object.values(keys)) {
    const v = all[k];
    if (typeof v === 'string') annotations[k] = v;
  }
  const spec = obj.spec ?? {};
  const podCIDRs = Array.isArray(spec.podCIDRs) && spec.podCIDRs.length > 0 ? spec.podCIDRs.filter((c) => typeof c === 'string') : typeof spec.podCIDR === 'string' && spec.podCIDR ? [spec.podCIDR] : [];
  const created = Date.parse(obj.metadata?.creationTimestamp ?? '');
  return { name, created: Number.isFinite(created) ? created : 0, podCIDRs, annotations };
}

export const leaseKeyOf = (nodeName: string): string => `node/${nodeName}`;

/** The node's IPv4 and IPv6 podCIDRs (first of each family), refusing any entry not written canonically. */
export function podSubnets(node: SlimNode): { subnet: IP4Net | null; ipv6Subnet: IP6Net | null } {
  let subnet: IP4Net | null = null;
  let ipv6Subnet: IP6Net | null = null;
  for (const cidr of node.podCIDRs) {
    if (cidr.includes(':')) {
      if (!isCanonicalNet6(cidr)) throw new LeaseDecodeError(leaseKeyOf(node.name), `podCIDR ${JSON.stringify(cidr)} is not an IPv6 network in canonical form`, 'malformed_pod_cidr');
      ipv6Subnet ??= parseIP6Net(cidr);
    } else {
      if (!isCanonicalNet4(cidr)) throw new LeaseDecodeError(leaseKeyOf(node.name), `podCIDR ${JSON.stringify(cidr)} is not an IPv4 network in canonical form`, 'malformed_pod_cidr');
      subnet ??= parseIP4Net(cidr);
    }
  }
  return { subnet, ipv6Subnet };
}

/** Backend data as flannel writes it: JSON text, "null" (or nothing) for none. */
function backendDataOf(node: SlimNode, key: string): unknown {
  const text = node.annotations[key];
  if (text === undefined || text === '' || text === 'null') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    throw new LeaseDecodeError(leaseKeyOf(node.name), `annotation ${key} is not JSON`, 'malformed_backend_data');
  }
}

export interface NodeLeaseFamilies {
  enableIPv4: boolean;
  enableIPv6: boolean;
  /** The network's backend: a node announcing another one cannot be reached by ours. */
  backendType: string;
}

/**
 * The lease a node stands for; null when the node is no lease (its flanneld
 * never ran in kube mode: no `kube-subnet-manager: "true"`). Throws
 * LeaseDecodeError (with a reason for /metrics) for text that is refused.
 */
export function nodeToLease(node: SlimNode, keys: AnnotationKeys, families: NodeLeaseFamilies): Lease | null {
  const a = node.annotations;
  if (a[keys.kubeSubnetManager] !== 'true') return null;
  const key = leaseKeyOf(node.name);
  const backendType = a[keys.backendType] ?? '';
  if (backendType !== '' && !BACKEND_TYPE_RE.test(backendType)) throw new LeaseDecodeError(key, `backend-type ${JSON.stringify(backendType)} is not a backend name`, 'malformed_backend_type');
  if (backendType !== families.backendType) {
    throw new LeaseDecodeError(key, `backend-type ${JSON.stringify(backendType)} is not this network's ${families.backendType}`, 'other_backend_type');
  }
  const { subnet, ipv6Subnet } = podSubnets(node);
  const attrs: LeaseAttrs = { publicIP: '', publicIPv6: null, backendType };
  if (families.enableIPv4) {
    const ip = a[keys.publicIP] ?? '';
    if (!isCanonicalIP4(ip)) throw new LeaseDecodeError(key, `public-ip ${JSON.stringify(ip)} is not an IPv4 address in canonical form`, 'malformed_public_ip');
    attrs.publicIP = ip;
    const bd = backendDataOf(node, keys.backendData);
    if (bd !== undefined) attrs.backendData = bd;
  }
  if (families.enableIPv6) {
    const ip6 = a[keys.publicIPv6] ?? '';
    if (ip6 !== '' && !isCanonicalIP6(ip6)) throw new LeaseDecodeError(key, `public-ipv6 ${JSON.stringify(ip6)} is not an IPv6 address in canonical form`, 'malformed_public_ipv6');
    attrs.publicIPv6 = ip6 === '' ? null : ip6;
    const bd6 = backendDataOf(node, keys.backendV6Data);
    if (bd6 !== undefined) attrs.backendV6Data = bd6;
  }
  return {
    subnet: families.enableIPv4 ? subnet : null,
    ipv6Subnet: families.enableIPv6 ? ipv6Subnet : null,
    attrs,
    expiration: 0,
    key,
    createRevision: node.created,
  };
}

/** Backends whose BackendData flannel publishes even when it is null (kube.go AcquireLease). */
function publishesV4(attrs: LeaseAttrs, bd: string): boolean {
  const t = attrs.backendType;
  return (t === 'vxlan' && bd !== 'null') || (t === 'wireguard' && bd !== 'null') || t !== 'vxlan';
}

function publishesV6(attrs: LeaseAttrs, bd6: string): boolean {
  const t = attrs.backendType;
  if (!attrs.publicIPv6) return false;
  return (t === 'vxlan' && bd6 !== 'null') || (t === 'wireguard' && bd6 !== 'null') || t === 'host-gw';
}

/** An operator's address annotation when it is an address of the family, else undefined. */
function operatorAddress(a: Record<string, string>, key: string, v6: boolean): string | undefined {
  const v = a[key];
  if (v === undefined || v === '') return undefined;
  return (v6 ? isCanonicalIP6(v) : isCanonicalIP4(v)) ? v : undefined;
}

/**
 * The address this node publishes: the operator's `public-ip-overwrite`
 * when set, else the address flanneld found (itself `node-public-ip` when
 * that was set at start), as flannel. Followed while running: a change of
 * either annotation is published without a restart.
 */
export function publishedAddress(a: Record<string, string>, keys: AnnotationKeys, found: string, v6: boolean, startedWith: string | undefined): string {
  const overwrite = operatorAddress(a, v6 ? keys.publicIPv6Overwrite : keys.publicIPOverwrite, v6);
  if (overwrite) return overwrite;
  const pinned = operatorAddress(a, v6 ? keys.nodePublicIPv6 : keys.nodePublicIP, v6);
  // node-public-ip chose the interface at start; a later value is published as it is.
  if (pinned && pinned !== startedWith) return pinned;
  return found;
}

/**
 * The annotations our node must carry for `attrs`, as flannel writes them,
 * limited to the keys whose value differs from the node's now (the patch
 * to send; empty when nothing changed).
 */
export function ownAnnotationChanges(node: SlimNode, keys: AnnotationKeys, attrs: LeaseAttrs, startedWith: { publicIP?: string; publicIPv6?: string }): Record<string, string> {
  const a = node.annotations;
  const want: Record<string, string> = {};
  const bd = JSON.stringify(attrs.backendData ?? null);
  const bd6 = JSON.stringify(attrs.backendV6Data ?? null);
  want[keys.backendType] = attrs.backendType ?? '';
  if (publishesV4(attrs, bd)) {
    want[keys.backendData] = bd;
    want[keys.publicIP] = publishedAddress(a, keys, attrs.publicIP, false, startedWith.publicIP);
  }
  if (publishesV6(attrs, bd6)) {
    want[keys.backendV6Data] = bd6;
    want[keys.publicIPv6] = publishedAddress(a, keys, attrs.publicIPv6!, true, startedWith.publicIPv6);
  }
  want[keys.kubeSubnetManager] = 'true';
  const changes: Record<string, string> = {};
  for (const [k, v] of Object.entries(want)) if (a[k] !== v) changes[k] = v;
  return changes;
}
