/**
 * Backend.Type -> factory, as flannel's backend manager. Factories are loaded
 * lazily so a backend's dependencies (e.g. the native addon for udp) are only
 * needed when that backend is configured.
 */
import type { BackendFactory } from './types.js';

const registry = new Map<string, () => Promise<BackendFactory>>([
  ['alloc', async () => (await import('./alloc/index.js')).createAllocBackend],
  ['udp', async () => (await import('./udp/index.js')).createUdpBackend],
]);

export function backendTypes(): string[] {
  return [...registry.keys()].sort();
}

export async function getBackendFactory(type: string): Promise<BackendFactory> {
  const load = registry.get(type);
  if (!load) throw new Error(`unknown backend type "${type}" (known: ${backendTypes().join(', ')})`);
  return load();
}
