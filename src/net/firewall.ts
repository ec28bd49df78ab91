/**
 * The masquerade (--ip-masq) and forward (--iptables-forward-rules) policy
 * of both families, as flannel installs it: iptables rules for Network and
 * ip6tables rules for IPv6Network, or with EnableNFTables the tables
 * `ip flannel-ipv4` and `ip6 flannel-ipv6`. Each family is kept on its own:
 * one whose tool is missing or failing is logged and the other still runs
 * (flannel goes on without its rules and says so; so do we).
 */
import type { NetworkConfig } from '../config/network.js';
import type { Lease } from '../subnet/types.js';
import type { Logger } from '../log.js';
import { IpRoute } from './iproute.js';
import { IptablesKeeper, forwardRules, masqRules, masqRules6, supportsRandomFully, type IptablesRule } from './iptables.js';
import { NFT_TABLE_IPV4, NFT_TABLE_IPV6, NftablesKeeper, nftRuleset, nftRuleset6 } from './nftables.js';

export interface FirewallOptions {
  ipMasq: boolean;
  forwardRules: boolean;
  resyncSeconds: number;
  log: Logger;
}

export interface Firewall {
  teardown(): Promise<void>;
}

export async function installFirewall(config: NetworkConfig, lease: Lease, opts: FirewallOptions): Promise<Firewall> {
  const parts = { masq: opts.ipMasq, forward: opts.forwardRules };
  const kept: Firewall[] = [];
  if (!parts.masq && !parts.forward) return { teardown: async () => {} };
  const v4 = config.enableIPv4 && config.network && lease.subnet ? { network: config.network, subnet: lease.subnet } : null;
  const v6 = config.enableIPv6 && config.ipv6Network && lease.ipv6Subnet ? { network: config.ipv6Network, subnet: lease.ipv6Subnet } : null;
  const attempt = async (what: string, install: () => Promise<Firewall>) => {
    try {
      kept.push(await install());
    } catch (err) {
      opts.log.error(`cannot install ${what}`, { error: (err as Error).message });
    }
  };
  if (config.enableNFTables) {
    if (v4) await attempt('the nftables table ip flannel-ipv4', () => keepTable(NFT_TABLE_IPV4, nftRuleset(v4.network, v4.subnet, parts), opts));
    if (v6) await attempt('the nftables table ip6 flannel-ipv6', () => keepTable(NFT_TABLE_IPV6, nftRuleset6(v6.network, v6.subnet, parts), opts));
  } else {
    if (v4) await attempt('iptables rules', () => keepRules('iptables', (rf) => [...(parts.masq ? [masqRules(v4.network, v4.subnet, rf)] : []), ...(parts.forward ? [forwardRules(v4.network)] : [])], opts));
    if (v6) await attempt('ip6tables rules', () => keepRules('ip6tables', (rf) => [...(parts.masq ? [masqRules6(v6.network, v6.subnet, rf)] : []), ...(parts.forward ? [forwardRules(v6.network)] : [])], opts));
  }
  return { teardown: async () => void (await Promise.all(kept.map((k) => k.teardown()))) };
}

async function keepTable(table: typeof NFT_TABLE_IPV4, ruleset: string, opts: FirewallOptions): Promise<Firewall> {
  const keeper = new NftablesKeeper(undefined, opts.resyncSeconds, table);
  await keeper.keep(ruleset);
  return keeper;
}

/** Each rule set (masq, forward) is kept whole and in order, as flannel's ensure does. */
async function keepRules(binary: 'iptables' | 'ip6tables', sets: (randomFully: boolean) => IptablesRule[][], opts: FirewallOptions): Promise<Firewall> {
  const runner = new IpRoute({ binary });
  const keeper = new IptablesKeeper(runner, opts.resyncSeconds);
  try {
    for (const rules of sets(await supportsRandomFully(runner))) await keeper.keep(rules);
  } catch (err) {
    await keeper.teardown().catch(() => {});
    throw err;
  }
  return keeper;
}
