/** Factory of the udp backend for the backend registry. */
import type { BackendContext, BackendFactory } from '../types.js';
import { UdpBackend, type UdpBackendOptions } from './backend.js';

export { UdpBackend, type UdpBackendOptions } from './backend.js';
export { parseUdpBackendConfig, DEFAULT_UDP_PORT } from './options.js';

export const createUdpBackend: BackendFactory = async (ctx: BackendContext) => new UdpBackend(ctx);

/** Same as createUdpBackend with test/tooling overrides (TUN name, ip runner, addon, batch size). */
export function createUdpBackendWith(ctx: BackendContext, opts: UdpBackendOptions): UdpBackend {
  return new UdpBackend(ctx, opts);
}
