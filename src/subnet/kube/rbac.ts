/**
 * The permissions flanneld uses, checked at start with
 * SelfSubjectAccessReview (allowed to every authenticated user): a
 * ClusterRole missing one leaves flannel's own daemon running with a
 * silently broken network; ours names the missing verb and waits.
 */
import type { KubeClient } from './client.js';

export interface Permission {
  verb: string;
  resource: string;
  subresource?: string;
  name?: string;
  namespace?: string;
  /** "patch nodes/status", for the log. */
  describe: string;
}

/** flannel's ClusterRole: nodes get, list, watch; nodes/status patch; pods get (only to find the node without NODE_NAME). */
export function requiredPermissions(nodeName: string, needsPods: boolean, podNamespace?: string): Permission[] {
  const p: Permission[] = [
    { verb: 'get', resource: 'nodes', name: nodeName, describe: 'get nodes' },
    { verb: 'list', resource: 'nodes', describe: 'list nodes' },
    { verb: 'watch', resource: 'nodes', describe: 'watch nodes' },
    { verb: 'patch', resource: 'nodes', subresource: 'status', name: nodeName, describe: 'patch nodes/status' },
  ];
  if (needsPods) p.push({ verb: 'get', resource: 'pods', namespace: podNamespace, describe: 'get pods' });
  return p;
}

export async function missingPermissions(client: KubeClient, wanted: Permission[]): Promise<Permission[]> {
  const answers = await Promise.all(
    wanted.map((p) =>
      client.request<{ status?: { allowed?: boolean } }>('POST', '/apis/authorization.k8s.io/v1/selfsubjectaccessreviews', {
        apiVersion: 'authorization.k8s.io/v1',
        kind: 'SelfSubjectAccessReview',
        spec: {
          resourceAttributes: {
            verb: p.verb,
            resource: p.resource,
            ...(p.subresource ? { subresource: p.subresource } : {}),
            ...(p.name ? { name: p.name } : {}),
            ...(p.namespace ? { namespace: p.namespace } : {}),
          },
        },
      }),
    ),
  );
  return wanted.filter((_, i) => answers[i]!.status?.allowed !== true);
}
