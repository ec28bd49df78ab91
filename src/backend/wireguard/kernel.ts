/**
 * The wireguard backend's kernel path, flannel's: `wireguard` links
 * (flannel-wg, and flannel-wg-v6 in Mode separate with IPv6) configured
 * with wireguard-tools. The whole state of a device (key,
 * port, every peer) goes to `wg syncconf` in one file per round, so a round
 * is one process whatever the number of peers, and peers not in the file
 * are removed by wg itself. The file holds the private key: it is written
 * 0600 beside the key file and removed after use.
 */
import { constants, open, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname, join } from 'node:path';
import type { Logger } from '../../log.js';
import type { IpRoute } from '../../net/iproute.js';
import { ensureOnlyAddress } from '../../net/device-address.js';
import { formatIP4, formatIP4Net, formatIP6, formatIP6Net, type IP4Net, type IP6Net } from '../../net/ipaddr.js';
import type { WireGuardOptions } from './options.js';
import { endpointText, type WgDeviceSpec, type WgPeerSpec } from './peers.js';

/** Does the kernel have WireGuard? Ask it to create a throw-away link. */
export async function kernelHasWireGuard(ip: IpRoute): Promise<boolean> {
  const probe = 'flannel-wgprobe';
  try {
    await ip.run(['link', 'add', 'dev', probe, 'type', 'wireguard']);
  } catch {
    return false;
  }
  await ip.runIgnoringMissing(['link', 'del', 'dev', probe]);
  return true;
}

/** The `wg syncconf` file for a device: our key and its port, one [Peer] per peer. */
export function wgConfig(privateKey: Buffer, opts: WireGuardOptions, listenPort: number, peers: WgPeerSpec[]): string {
  const lines = ['[Interface]', `PrivateKey = ${privateKey.toString('base64')}`, `ListenPort = ${listenPort}`];
  for (const p of peers) {
    lines.push('', '[Peer]', `PublicKey = ${p.publicKeyText}`, `Endpoint = ${endpointText(p)}`, `AllowedIPs = ${p.allowedIPs.join(', ')}`);
    if (opts.psk) lines.push(`PresharedKey = ${opts.psk.toString('base64')}`);
    if (opts.keepaliveSeconds > 0) lines.push(`PersistentKeepalive = ${opts.keepaliveSeconds}`);
  }
  return lines.join('\n') + '\n';
}

/** Our addresses on the devices and the networks routed into them. */
export interface KernelWireGuardNetworks {
  network: IP4Net | null;
  ipv6Network: IP6Net | null;
}

export class KernelWireGuard {
  private readonly last = new Map<string, string>();

  constructor(
    private readonly ip: IpRoute,
    /** Runs `wg`; plan-mode in a dry run or a test. */
    private readonly wg: IpRoute,
    /** Reads the kernel (the real one in a dry run, where `ip` only records). */
    private readonly readIp: IpRoute,
    private readonly devices: WgDeviceSpec[],
    private readonly networks: KernelWireGuardNetworks,
    private readonly mtu: number,
    private readonly privateKey: Buffer,
    private readonly opts: WireGuardOptions,
    private readonly keyFile: string,
    private readonly log: Logger,
    /** --dry-run: write no config file (it would hold the key) and delete nothing at stop. */
    private readonly dryRun = false,
  ) {}

  async start(ownLease: { subnet: IP4Net | null; ipv6Subnet: IP6Net | null }): Promise<void> {
    for (const dev of this.devices) {
      const name = dev.name;
      // flannel recreates an existing device; one of the right type is kept (its peers are resynced below).
      const existing = await this.readIp.runIgnoringMissing(['-d', '-json', 'link', 'show', 'dev', name]);
      const isWg = /"info_kind":"wireguard"/.test(existing);
      if (existing && !isWg) await this.ip.run(['link', 'del', 'dev', name]);
      if (!isWg) await this.ip.run(['link', 'add', 'dev', name, 'type', 'wireguard']);
      await this.sync(dev, []);
      // flannel's Configure / ConfigureV6: our subnet's first address as /32 and /128.
      const v4 = dev.carriesIPv4 && ownLease.subnet && this.networks.network;
      const v6 = dev.carriesIPv6 && ownLease.ipv6Subnet && this.networks.ipv6Network;
      if (v4) await ensureOnlyAddress(this.readIp, this.ip, name, `${formatIP4(ownLease.subnet!.ip)}/32`, () => true, this.log);
      if (v6) await ensureOnlyAddress(this.readIp, this.ip, name, `${formatIP6(ownLease.ipv6Subnet!.ip)}/128`, () => true, this.log, 6);
      await this.ip.run(['link', 'set', 'dev', name, 'mtu', String(this.mtu), 'up']);
      if (v4) await this.ip.run(['route', 'replace', formatIP4Net(this.networks.network!), 'dev', name, 'scope', 'link']);
      if (v6) await this.ip.run(['-6', 'route', 'replace', formatIP6Net(this.networks.ipv6Network!), 'dev', name]);
    }
  }

  handleRouteEvents(): Promise<void> {
    // The kernel routes by allowed IPs; the one route per Network is set at start.
    return Promise.resolve();
  }

  async setPeers(device: string, peers: WgPeerSpec[]): Promise<void> {
    const dev = this.devices.find((d) => d.name === device);
    if (dev) await this.sync(dev, peers);
  }

  private async sync(dev: WgDeviceSpec, peers: WgPeerSpec[]): Promise<void> {
    const text = wgConfig(this.privateKey, this.opts, dev.listenPort, peers);
    if (text === this.last.get(dev.name)) return;
    if (this.dryRun) {
      // A dry run writes no file (it would hold the key): the command, and the peers it would carry.
      await this.wg.run(['syncconf', dev.name, `<config: ${peers.length === 0 ? 'no peers' : peers.map((p) => `${endpointText(p)} ${p.allowedIPs.join(',')}`).join('; ')}>`]);
      this.last.set(dev.name, text);
      return;
    }
    // It holds the private key: created exclusively at an unguessable name, never through a symlink.
    const file = join(dirname(this.keyFile), `.${dev.name}.${process.pid}.${randomBytes(6).toString('hex')}.conf`);
    const fh = await open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      await fh.writeFile(text);
    } finally {
      await fh.close();
    }
    try {
      await this.wg.run(['syncconf', dev.name, file]);
      this.last.set(dev.name, text);
      this.log.info('wireguard peers synced', { device: dev.name, peers: peers.length });
    } finally {
      await rm(file, { force: true });
    }
  }

  async stop(): Promise<void> {
    // flannel removes its devices when it stops; a dry run shows what a start does, not this.
    if (this.dryRun) return;
    for (const dev of this.devices) await this.ip.runIgnoringMissing(['link', 'del', 'dev', dev.name]);
  }
}
