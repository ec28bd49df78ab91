/**
 * Backend.Type -> factory, as flannel's backend manager. Factories are loaded
 * lazily so a backend's dependencies (e.g. the native addon for udp) are only
 * needed when that backend is configured.
 */
import type { BackendFactory } from './types.js';

export interface BackendRegistry {
  /** Every type a network config may name. */
  types(): string[];
  factory(type: string): Promise<BackendFactory>;
}

const loaders = new Map<string, () => Promise<BackendFactory>>([
  ['alloc', async () => (await import('./alloc/index.js')).createAllocBackend],
  ['udp', async () => (await import('./udp/index.js')).createUdpBackend],
  ['vxlan', async () => (await import('./vxlan/index.js')).createVxlanBackend],
  ['host-gw', async () => (await import('./host-gw/index.js')).createHostGwBackend],
  ['ipip', async () => (await import('./ipip/index.js')).createIpipBackend],
  ['aws-vpc', async () => (await import('./aws-vpc/index.js')).createAwsVpcBackend],
  ['gce', async () => (await import('./gce/index.js')).createGceBackend],
  ['ali-vpc', async () => (await import('./ali-vpc/index.js')).createAliVpcBackend],
  ['tencent-vpc', async () => (await import('./tencent-vpc/index.js')).createTencentVpcBackend],
  ['ipsec', async () => (await import('./ipsec/index.js')).createIpsecBackend],
  ['wireguard', async () => (await import('./wireguard/index.js')).createWireGuardBackend],
  ['extension', async () => (await import('./extension/index.js')).createExtensionBackend],
]);

export function backendTypes(): string[] {
  return [...loaders.keys()].sort();
}

export async function getBackendFactory(type: string): Promise<BackendFactory> {
  const load = loaders.get(type);
  if (!load) throw new Error(`unknown backend type "${type}" (known: ${backendTypes().join(', ')})`);
  return load();
}

/** The backends this build of flanneld has. */
export const BUILTIN_BACKENDS: BackendRegistry = { types: backendTypes, factory: getBackendFactory };
