/**
 * A BackendContext for unit tests that build a backend directly: the network
 * config parsed from `config` (its Backend object as the backend's options),
 * eth0 at 192.0.2.1, a silent metrics registry, a fresh Health, the default
 * dataplane options, and fatal() that throws. `overrides` replaces any part.
 */
import { DEFAULT_DATAPLANE_OPTIONS, type BackendContext } from '../../src/backend/types.js';
import { parseNetworkConfig } from '../../src/config/network.js';
import { createLogger } from '../../src/log.js';
import { Health } from '../../src/metrics/health.js';

export function backendContext(config: Record<string, unknown>, overrides: Partial<BackendContext> = {}): BackendContext {
  return {
    config: parseNetworkConfig(JSON.stringify(config)),
    backendConfig: config.Backend as Record<string, unknown>,
    extIface: { name: 'eth0', index: 2, mtu: 1500, ifaceAddr: '192.0.2.1', extAddr: '192.0.2.1' },
    subnetManager: {} as BackendContext['subnetManager'],
    log: createLogger('test'),
    metrics: { register: () => {} },
    health: new Health(),
    dataplane: DEFAULT_DATAPLANE_OPTIONS,
    fatal: (err) => {
      throw err;
    },
    ...overrides,
  };
}
