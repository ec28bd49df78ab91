/** Factory of the vxlan backend for the backend registry. */
import type { BackendFactory } from '../types.js';
import { VxlanBackend } from './backend.js';

export { VxlanBackend, type VxlanBackendOptions } from './backend.js';

export const createVxlanBackend: BackendFactory = async (ctx) => new VxlanBackend(ctx);
