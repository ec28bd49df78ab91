/**
 * A cloud backend as the daemon drives it (prepare, start with our lease,
 * lease events), with a BackendContext whose log, health and fatal() the
 * test can read: for the aws-vpc, gce and ali-vpc tests against the fakes.
 */
import { Health } from '../../src/metrics/health.js';
import { Metrics } from '../../src/metrics/registry.js';
import { createLogger, setLogSink } from '../../src/log.js';
import { parseNetworkConfig } from '../../src/config/network.js';
import { BUILTIN_BACKENDS } from '../../src/backend/registry.js';
import type { Backend, BackendContext } from '../../src/backend/types.js';
import type { CloudRouteBackend } from '../../src/backend/cloud/backend.js';
import type { Lease, SubnetManager } from '../../src/subnet/types.js';
import { makeLease } from './leases.js';
import { waitFor } from './netns.js';

export const cloudLogLines: string[] = [];
setLogSink((l) => {
  cloudLogLines.push(l);
  if (process.env.FTS_TEST_VERBOSE) process.stderr.write(l + '\n');
});

export interface CloudHarness {
  backend: CloudRouteBackend;
  lease: Lease;
  health: Health;
  metrics: Metrics;
  fatal: Error[];
  /** Log lines of this harness only. */
  lines(): string[];
  /** Resolves once a round ended with the table in line. */
  synced(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startCloudBackend(configJson: string, own: { subnet: string; ifaceAddr: string }, opts: { start?: boolean } = {}): Promise<CloudHarness> {
  const config = parseNetworkConfig(configJson, { backendTypes: BUILTIN_BACKENDS.types() });
  const factory = await BUILTIN_BACKENDS.factory(config.backendType);
  const health = new Health();
  const metrics = new Metrics();
  const fatal: Error[] = [];
  const firstLine = cloudLogLines.length;
  const ctx: BackendContext = {
    config,
    backendConfig: config.backend,
    extIface: { name: 'eth0', index: 2, mtu: 9001, ifaceAddr: own.ifaceAddr, extAddr: own.ifaceAddr },
    subnetManager: {} as SubnetManager,
    log: createLogger(config.backendType),
    metrics,
    health,
    dataplane: { offload: false, rxCoalesce: false },
    fatal: (e) => void fatal.push(e),
  };
  const backend = (await factory(ctx)) as Backend as CloudRouteBackend;
  const lease = makeLease(own.subnet, own.ifaceAddr);
  await (backend as Backend).prepare(null);
  if (opts.start !== false) await backend.start(lease);
  return {
    backend,
    lease,
    health,
    metrics,
    fatal,
    lines: () => cloudLogLines.slice(firstLine),
    synced: async (timeoutMs = 10_000) => {
      await waitFor(() => {
        if (fatal.length > 0) throw new Error(`backend stopped: ${fatal[0]!.message}`);
        return backend.sync.synced;
      }, timeoutMs, 'cloud routes in sync');
    },
    stop: () => backend.stop(),
  };
}
