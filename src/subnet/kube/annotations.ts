/**
 * The node annotations that carry a lease in Kubernetes mode, named as
 * flannel names them: `<prefix>/<name>` with flannel's prefix rules (a
 * prefix without "/" gets "/" appended; one not ending in "/" or "-" gets
 * "-", so `example.com/9` gives `example.com/9-backend-type`).
 */

export const DEFAULT_ANNOTATION_PREFIX = 'flannel.alpha.coreos.com';

export interface AnnotationKeys {
  /** "true" on every node whose flanneld runs in kube mode: only such nodes are leases. */
  kubeSubnetManager: string;
  backendType: string;
  backendData: string;
  backendV6Data: string;
  publicIP: string;
  publicIPv6: string;
  /** Set by the operator: published instead of the address flanneld found. */
  publicIPOverwrite: string;
  publicIPv6Overwrite: string;
  /** Set by the operator: the address whose interface flanneld uses (as --public-ip). */
  nodePublicIP: string;
  nodePublicIPv6: string;
}

export class AnnotationPrefixError extends Error {
  constructor(prefix: string, why: string) {
    super(`--kube-annotation-prefix ${JSON.stringify(prefix)}: ${why}`);
    this.name = 'AnnotationPrefixError';
  }
}

export function annotationKeys(prefix: string = DEFAULT_ANNOTATION_PREFIX): AnnotationKeys {
  const slashes = prefix.split('/').length - 1;
  if (slashes > 1) throw new AnnotationPrefixError(prefix, 'can contain at most one "/"');
  let p = slashes === 0 ? `${prefix}/` : prefix;
  if (!p.endsWith('/') && !p.endsWith('-')) p += '-';
  // Kubernetes' own rule for annotation keys, as flannel checks it: a DNS name, then "/", then an optional name part.
  if (!/^(?:[a-z0-9_-]+\.)+[a-z0-9_-]+\/(?:[a-z0-9_-]+-)?$/.test(p)) {
    throw new AnnotationPrefixError(prefix, 'must look like example.com or example.com/name (lowercase letters, digits, ".", "-", "_")');
  }
  return {
    kubeSubnetManager: `${p}kube-subnet-manager`,
    backendType: `${p}backend-type`,
    backendData: `${p}backend-data`,
    backendV6Data: `${p}backend-v6-data`,
    publicIP: `${p}public-ip`,
    publicIPv6: `${p}public-ipv6`,
    publicIPOverwrite: `${p}public-ip-overwrite`,
    publicIPv6Overwrite: `${p}public-ipv6-overwrite`,
    nodePublicIP: `${p}node-public-ip`,
    nodePublicIPv6: `${p}node-public-ipv6`,
  };
}
