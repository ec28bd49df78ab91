/**
 * The wireguard backend's kernel path, flannel's: a `wireguard` link
 * (flannel-wg) configured with wireguard-tools. The whole device state (key,
 * port, every peer) goes to `wg syncconf` in one file per round, so a round
 * is one process whatever the number of peers, and peers not in the file
 * are removed by wg itself. The file holds the private key: it is written
 * 0600 beside the key file and removed after use.
 */
import { rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from '../../log.js';
import type { IpRoute } from '../../net/iproute.js';
import { ensureOnlyAddress } from '../../net/device-address.js';
import { formatIP4, formatIP4Net, type IP4Net } from '../../net/ipaddr.js';
import { DEVICE_NAME, type WireGuardOptions } from './options.js';
import type { WgPeerSpec } from './peers.js';

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

/** The `wg syncconf` file for the device: our key and port, one [Peer] per peer. */
export function wgConfig(privateKey: Buffer, opts: WireGuardOptions, peers: WgPeerSpec[]): string {
  const lines = ['[Interface]', `PrivateKey = ${privateKey.toString('base64')}`, `ListenPort = ${opts.listenPort}`];
  for (const p of peers) {
    lines.push('', '[Peer]', `PublicKey = ${p.publicKeyText}`, `Endpoint = ${p.endpointIP}:${p.port}`, `AllowedIPs = ${p.subnet}`);
    if (opts.psk) lines.push(`PresharedKey = ${opts.psk.toString('base64')}`);
    if (opts.keepaliveSeconds > 0) lines.push(`PersistentKeepalive = ${opts.keepaliveSeconds}`);
  }
  return lines.join('\n') + '\n';
}

export class KernelWireGuard {
  private subnet: IP4Net | null = null;
  private last = '';

  constructor(
    private readonly ip: IpRoute,
    /** Runs `wg`; plan-mode in a dry run or a test. */
    private readonly wg: IpRoute,
    private readonly network: IP4Net,
    private readonly mtu: number,
    private readonly privateKey: Buffer,
    private readonly opts: WireGuardOptions,
    private readonly keyFile: string,
    private readonly log: Logger,
  ) {}

  async start(ownLease: { subnet: IP4Net | null }): Promise<void> {
    this.subnet = ownLease.subnet;
    const dev = DEVICE_NAME;
    // flannel recreates an existing device; one of the right type is kept (its peers are resynced below).
    const existing = await this.ip.runIgnoringMissing(['-d', '-json', 'link', 'show', 'dev', dev]);
    const isWg = /"info_kind":"wireguard"/.test(existing);
    if (existing && !isWg) await this.ip.run(['link', 'del', 'dev', dev]);
    if (!isWg) await this.ip.run(['link', 'add', 'dev', dev, 'type', 'wireguard']);
    await this.sync([]);
    await ensureOnlyAddress(this.ip, this.ip, dev, `${formatIP4(this.subnet!.ip)}/32`, () => true, this.log);
    await this.ip.run(['link', 'set', 'dev', dev, 'mtu', String(this.mtu), 'up']);
    await this.ip.run(['route', 'replace', formatIP4Net(this.network), 'dev', dev, 'scope', 'link']);
  }

  handleRouteEvents(): Promise<void> {
    // The kernel routes by allowed IPs; the one route for the Network is set at start.
    return Promise.resolve();
  }

  setPeers(peers: WgPeerSpec[]): Promise<void> {
    return this.sync(peers);
  }

  private async sync(peers: WgPeerSpec[]): Promise<void> {
    const text = wgConfig(this.privateKey, this.opts, peers);
    if (text === this.last) return;
    const file = join(dirname(this.keyFile), `.${DEVICE_NAME}.${process.pid}.conf`);
    await writeFile(file, text, { mode: 0o600 });
    try {
      await this.wg.run(['syncconf', DEVICE_NAME, file]);
      this.last = text;
      this.log.info('wireguard peers synced', { device: DEVICE_NAME, peers: peers.length });
    } finally {
      await rm(file, { force: true });
    }
  }

  async stop(): Promise<void> {
    // flannel removes its device when it stops.
    await this.ip.runIgnoringMissing(['link', 'del', 'dev', DEVICE_NAME]);
  }
}
