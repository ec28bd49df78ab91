/** Options of the vxlan backend, as flannel reads them: {"Type":"vxlan","VNI":1,"Port":0,"GBP":false,"DirectRouting":false,"MTU":0}. */
import { boolOption, intOption } from '../option-readers.js';

export interface VxlanOptions {
  vni: number;
  /** UDP port; 0 = the kernel's default (8472). */
  port: number;
  gbp: boolean;
  learning: boolean;
  directRouting: boolean;
  /** 0 = link MTU - 50. */
  mtu: number;
}

/** Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14) headers. */
export const VXLAN_OVERHEAD = 50;

export function parseVxlanOptions(cfg: Record<string, unknown>): VxlanOptions {
  return {
    vni: intOption('vxlan', cfg, 'VNI', 1, 1, 16_777_215),
    port: intOption('vxlan', cfg, 'Port', 0, 0, 65_535),
    gbp: boolOption('vxlan', cfg, 'GBP'),
    learning: boolOption('vxlan', cfg, 'Learning'),
    directRouting: boolOption('vxlan', cfg, 'DirectRouting'),
    mtu: intOption('vxlan', cfg, 'MTU', 0, 0, 65_535),
  };
}
