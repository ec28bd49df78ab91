/**
 * flannel's masquerade and forward policy as nftables tables of our own,
 * for networks whose config says "EnableNFTables": true (as flannel's newer
 * releases accept): `table ip flannel-ipv4` for Network and `table ip6
 * flannel-ipv6` for IPv6Network, flannel's table names. Each holds the same
 * four masquerade decisions as the iptables rules (iptables.ts) and the two
 * forward accepts, installed in one `nft -f` transaction (the table is
 * flushed and refilled atomically), checked every resync interval and
 * reinstalled when someone deleted it, and removed on a clean stop.
 * Nothing outside our tables is touched.
 */
import { createLogger } from '../log.js';
import { formatIP4Net, formatIP6Net, type IP4Net, type IP6Net } from './ipaddr.js';
import { IpRoute } from './iproute.js';

/** One of our tables: nft family and name. */
export interface NftTable {
  family: 'ip' | 'ip6';
  name: string;
}

export const NFT_TABLE = 'flannel-ipv4';
export const NFT_TABLE6 = 'flannel-ipv6';
export const NFT_TABLE_IPV4: NftTable = { family: 'ip', name: NFT_TABLE };
export const NFT_TABLE_IPV6: NftTable = { family: 'ip6', name: NFT_TABLE6 };
const log = createLogger('nftables');

export interface NftParts {
  /** The postrouting chain (--ip-masq). */
  masq: boolean;
  /** The forward chain (--iptables-forward-rules). */
  forward: boolean;
}

/** The IPv4 table's whole content. */
export function nftRuleset(network: IP4Net, subnet: IP4Net, parts: NftParts): string {
  return rulesetFor(NFT_TABLE_IPV4, formatIP4Net(network), formatIP4Net(subnet), '224.0.0.0/4', parts);
}

/** The IPv6 table's whole content (multicast ff00::/8 excepted, as flannel). */
export function nftRuleset6(network: IP6Net, subnet: IP6Net, parts: NftParts): string {
  return rulesetFor(NFT_TABLE_IPV6, formatIP6Net(network), formatIP6Net(subnet), 'ff00::/8', parts);
}

function rulesetFor(t: NftTable, n: string, sn: string, multicast: string, parts: NftParts): string {
  const f = t.family;
  const lines = [`add table ${f} ${t.name}`, `flush table ${f} ${t.name}`, `table ${f} ${t.name} {`];
  if (parts.masq) {
    lines.push(
      '  chain postrtg {',
      '    type nat hook postrouting priority srcnat; policy accept;',
      // Traffic inside the overlay keeps its addresses.
      `    ${f} saddr ${n} ${f} daddr ${n} return`,
      // Overlay to the outside world (multicast excepted) is masqueraded.
      `    ${f} saddr ${n} ${f} daddr != ${multicast} masquerade fully-random`,
      // Outside traffic to our own pods keeps its source.
      `    ${f} saddr != ${n} ${f} daddr ${sn} return`,
      // The host talking to remote pods is masqueraded.
      `    ${f} saddr != ${n} ${f} daddr ${n} masquerade fully-random`,
      '  }',
    );
  }
  if (parts.forward) {
    lines.push('  chain forward {', '    type filter hook forward priority filter; policy accept;', `    ${f} saddr ${n} accept`, `    ${f} daddr ${n} accept`, '  }');
  }
  lines.push('}');
  return lines.join('\n') + '\n';
}

/** Keeps one of our tables installed. */
export class NftablesKeeper {
  private timer: NodeJS.Timeout | null = null;
  private ruleset = '';

  constructor(
    private readonly nft: IpRoute = new IpRoute({ binary: 'nft' }),
    private readonly resyncSeconds = 5,
    private readonly table: NftTable = NFT_TABLE_IPV4,
  ) {}

  private get shown(): string {
    return `${this.table.family} ${this.table.name}`;
  }

  /** Install the table now (one transaction) and keep it installed. */
  async keep(ruleset: string): Promise<void> {
    this.ruleset = ruleset;
    await this.install();
    log.info('installed nftables table', { table: this.shown });
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
      await this.nft.run(['list', 'table', this.table.family, this.table.name]);
    } catch {
      try {
        await this.install();
        log.warn('nftables table was missing, reinstalled', { table: this.shown });
      } catch (err) {
        log.error('cannot reinstall the nftables table', { table: this.shown, error: (err as Error).message });
      }
    }
  }

  async teardown(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    if (!this.ruleset) return;
    await this.nft.runIgnoringMissing(['delete', 'table', this.table.family, this.table.name]).catch((err: Error) => log.warn('cannot remove the nftables table', { table: this.shown, error: err.message }));
    log.info('removed nftables table', { table: this.shown });
  }
}
