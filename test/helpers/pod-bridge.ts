/** What the CNI bridge plugin does with subnet.env: a cni0 bridge holding the pod gateway address. */
import type { TestHost } from './netns.js';

export async function attachPodBridge(h: TestHost, env: Record<string, string>): Promise<void> {
  await h.exec(['ip', 'link', 'add', 'cni0', 'type', 'bridge'], { check: true });
  await h.exec(['ip', 'addr', 'add', env.FLANNEL_SUBNET!, 'dev', 'cni0'], { check: true });
  await h.exec(['ip', 'link', 'set', 'cni0', 'mtu', env.FLANNEL_MTU!, 'up'], { check: true });
}
