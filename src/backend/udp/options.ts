/**
 * Options of the udp backend from the network config's Backend object, as
 * flannel reads them: {"Type":"udp","Port":8285}. Go's JSON decoding matches
 * names case-insensitively, so "port" works too.
 */

import { goField } from '../../config/go-json.js';
import { BackendOptionError } from '../errors.js';

export const DEFAULT_UDP_PORT = 8285;

export interface UdpBackendConfig {
  port: number;
  /**
   * Worker pairs (flannel0 queues and UDP sockets), ours: flannel has no
   * such option and ignores it. Unset: the daemon's default (the number of
   * cores, capped).
   */
  workers?: number;
}

export function parseUdpBackendConfig(backend: Record<string, unknown>, maxWorkers = 8): UdpBackendConfig {
  const raw = goField(backend, 'Port');
  let port = DEFAULT_UDP_PORT;
  if (!(raw === undefined || raw === null || raw === 0)) {
    if (typeof raw !== 'number' || !Number.isInteger(raw) || raw < 1 || raw > 65535) throw new BackendOptionError('udp', 'Port', 'an integer in 1..65535', raw);
    port = raw;
  }
  const w = goField(backend, 'Workers');
  if (w === undefined || w === null || w === 0) return { port };
  if (typeof w !== 'number' || !Number.isInteger(w) || w < 1 || w > maxWorkers) throw new BackendOptionError('udp', 'Workers', `an integer in 1..${maxWorkers}`, w);
  return { port, workers: w };
}
