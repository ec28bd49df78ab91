/**
 * What the CNI bridge plugin does with subnet.env: a cni0 bridge holding
 * the pod gateway address of each family subnet.env names (FLANNEL_SUBNET,
 * FLANNEL_IPV6_SUBNET), at FLANNEL_MTU.
 */
import type { TestHost } from './netns.js';

export async function attachPodBridge(h: TestHost, env: Record<string, string>): Promise<void> {
  await h.exec(['ip', 'link', 'add', 'cni0', 'type', 'bridge'], { check: true });
  if (env.FLANNEL_SUBNET) await h.exec(['ip', 'addr', 'add', env.FLANNEL_SUBNET, 'dev', 'cni0'], { check: true });
  if (env.FLANNEL_IPV6_SUBNET) await h.exec(['ip', '-6', 'addr', 'add', env.FLANNEL_IPV6_SUBNET, 'dev', 'cni0', 'nodad'], { check: true });
  await h.exec(['ip', 'link', 'set', 'cni0', 'mtu', env.FLANNEL_MTU!, 'up'], { check: true });
}
