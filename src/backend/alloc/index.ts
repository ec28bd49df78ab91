/**
 * The alloc backend: only leases a subnet and writes subnet.env, programs
 * no dataplane (something else routes the traffic), as flannel's alloc.
 */
import type { Backend, BackendContext } from '../types.js';

export async function createAllocBackend(ctx: BackendContext): Promise<Backend> {
  return {
    type: 'alloc',
    prepare: async () => ({ backendType: 'alloc' }),
    mtu: () => ctx.extIface.mtu,
    start: async () => {},
    handleEvents: async () => {},
    stop: async () => {},
  };
}
