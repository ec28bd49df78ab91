/**
 * flannel's "udp" backend: flannel0's packets sent, unchanged, as UDP
 * payloads to the host owning the destination subnet (port 8285 by
 * default), datagrams from peers written back into flannel0. All of it is
 * the userspace dataplane (src/dataplane) with bare packets; this class adds
 * the backend's config, its lease attributes (none: peers only need
 * PublicIP) and its name.
 */
import type { Backend, BackendContext, BackendLeaseAttrs } from '../types.js';
import { UserspaceDataplane, type DataplaneOptions } from '../../dataplane/dataplane.js';
import { MAX_WORKERS } from '../../dataplane/counters.js';
import { parseUdpBackendConfig } from './options.js';

/** Test and tooling overrides of the dataplane (TUN name, ip runner, addon, batch size...). */
export type UdpBackendOptions = Partial<DataplaneOptions>;

export class UdpBackend extends UserspaceDataplane implements Backend {
  readonly type = 'udp';

  constructor(ctx: BackendContext, opts: UdpBackendOptions = {}) {
    const config = opts.port === undefined ? parseUdpBackendConfig(ctx.backendConfig, MAX_WORKERS) : { port: opts.port };
    super(ctx, { ...opts, ...config });
  }

  async prepare(): Promise<BackendLeaseAttrs> {
    // flannel's udp backend publishes no BackendType/BackendData: peers only need PublicIP.
    return {};
  }
}
