/**
 * flannel's masquerade and forward policy as an nftables table of our own,
 * for networks whose config says "EnableNFTables": true (as flannel's newer
 * releases accept): the same four masquerade decisions as the iptables rules
 * (iptables.ts) and the two forward accepts, installed in one `nft -f`
 * transaction (the table is flushed and refilled atomically), checked every
 * resync interval and reinstalled when someone deleted it, and removed on a
 * clean stop. Nothing outside the table is touched.
 */
import { createLogger } from '../log.js';
import { formatIP4Net, type IP4Net } from './ipaddr.js';
import { IpRoute } from './iproute.js';

export const NFT_TABLE = 'flannel-ipv4';
const log = createLogger('nftables');

/** The table's whole content: `masq` adds the postrouting chain, `forward` the forward chain. */
export function nftRuleset(network: IP4Net, subnet: IP4Net, parts: { masq: boolean; forward: boolean }): string {
  const n = formatIP4Net(network);
  const sn = formatIP4Net(subnet);
  const lines = [`add table ip ${NFT_TABLE}`, `flush table ip ${NFT_TABLE}`, `table ip ${NFT_TABLE} {`];
  if (parts.masq) {
    lines.push(
      '  chain postrtg {',
      '    type nat hook postrouting priority srcnat; policy accept;',
      // Traffic inside the overlay keeps its addresses.
      `    ip saddr ${n} ip daddr ${n} return`,
      // Overlay to the outside world (multicast excepted) is masqueraded.
      `    ip saddr ${n} ip daddr != 224.0.0.0/4 masquerade fully-random`,
      // Outside traffic to our own pods keeps its source.
      `    ip saddr != ${n} ip daddr ${sn} return`,
      // The host talking to remote pods is masqueraded.
      `    ip saddr != ${n} ip daddr ${n} masquerade fully-random`,
      '  }',
    );
  }
  if (parts.forward) {
    lines.push('  chain forward {', '    type filter hook forward priority filter; policy accept;', `    ip saddr ${n} accept`, `    ip daddr ${n} accept`, '  }');
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}

export class NftablesKeeper {
  private timer: NodeJS.Timeout | null = null;
  private ruleset = '';

  constructor(
    private readonly nft: IpRoute = new IpRoute({ binary: 'nft' }),
    private readonly resyncSeconds = 5,
  ) {}

  /** Install the table now (one transaction) and keep it installed. */
  async keep(ruleset: string): Promise<void> {
    this.ruleset = ruleset;
    await this.install();
    log.info('installed nftables table', { table: `ip ${NFT_TABLE}` });
    if (this.resyncSeconds > 0 && !this.timer) {
      this.timer = setInterval(() => void this.check(), this.resyncSeconds * 1000);
      this.timer.unref();
    }
  }

  private install(): Promise<unknown> {
    return this.nft.batchFile(this.ruleset);
  }

  /** Reinstall the table when it is gone (flushed by someone, or a firewall reload). */
  private async check(): Promise<void> {
    try {
      await this.nft.run(['list', 'table', 'ip', NFT_TABLE]);
    } catch {
      try {
        await this.install();
        log.warn('nftables table was missing, reinstalled', { table: `ip ${NFT_TABLE}` });
      } catch (err) {
        log.error('cannot reinstall the nftables table', { error: (err as Error).message });
      }
    }
  }

  async teardown(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (!this.ruleset) return;
    await this.nft.runIgnoringMissing(['delete', 'table', 'ip', NFT_TABLE]).catch((err: Error) => log.warn('cannot remove the nftables table', { error: err.message }));
    log.info('removed nftables table', { table: `ip ${NFT_TABLE}` });
  }
}
