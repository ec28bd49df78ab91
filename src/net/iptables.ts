/**
 * flannel's iptables rules: masquerade for --ip-masq and FORWARD accepts for
 * --iptables-forward-rules, kept in place by a periodic resync (other tools
 * such as Docker or firewalld may flush them) and removed on a clean stop.
 */
import { createLogger } from '../log.js';
import { formatIP4Net, formatIP6Net, type IP4Net, type IP6Net } from './ipaddr.js';
import { IpCommandError, IpRoute, type IpRunner } from './iproute.js';

export interface IptablesRule {
  table: string;
  chain: string;
  spec: string[];
}

const log = createLogger('iptables');

/** Multicast, never masqueraded: flannel's exception per family. */
const MULTICAST = { ipv4: '224.0.0.0/4', ipv6: 'ff00::/8' };

/** flannel's MasqRules (iptables). */
export function masqRules(network: IP4Net, subnet: IP4Net, randomFully: boolean): IptablesRule[] {
  return masqRulesFor(formatIP4Net(network), formatIP4Net(subnet), MULTICAST.ipv4, randomFully);
}

/** flannel's MasqIP6Rules (ip6tables): the same four decisions over IPv6Network, multicast ff00::/8 excepted. */
export function masqRules6(network: IP6Net, subnet: IP6Net, randomFully: boolean): IptablesRule[] {
  return masqRulesFor(formatIP6Net(network), formatIP6Net(subnet), MULTICAST.ipv6, randomFully);
}

function masqRulesFor(n: string, sn: string, multicast: string, randomFully: boolean): IptablesRule[] {
  const tag = ['-m', 'comment', '--comment', 'flanneld masq'];
  const masq = randomFully ? ['-j', 'MASQUERADE', '--random-fully'] : ['-j', 'MASQUERADE'];
  return [
    // Traffic inside the overlay keeps its addresses.
    { table: 'nat', chain: 'POSTROUTING', spec: ['-s', n, '-d', n, ...tag, '-j', 'RETURN'] },
    // Overlay to the outside world (multicast excepted) is masqueraded.
    { table: 'nat', chain: 'POSTROUTING', spec: ['-s', n, '!', '-d', multicast, ...tag, ...masq] },
    // Outside traffic to our own pods keeps its source.
    { table: 'nat', chain: 'POSTROUTING', spec: ['!', '-s', n, '-d', sn, ...tag, '-j', 'RETURN'] },
    // The host talking to remote pods is masqueraded.
    { table: 'nat', chain: 'POSTROUTING', spec: ['!', '-s', n, '-d', n, ...tag, ...masq] },
  ];
}

/** flannel's ForwardRules, for Network (iptables) or IPv6Network (ip6tables). */
export function forwardRules(network: IP4Net | IP6Net): IptablesRule[] {
  const n = typeof network.ip === 'bigint' ? formatIP6Net(network as IP6Net) : formatIP4Net(network as IP4Net);
  const tag = ['-m', 'comment', '--comment', 'flanneld forward'];
  return [
    { table: 'filter', chain: 'FORWARD', spec: ['-s', n, ...tag, '-j', 'ACCEPT'] },
    { table: 'filter', chain: 'FORWARD', spec: ['-d', n, ...tag, '-j', 'ACCEPT'] },
  ];
}

/** Whether this iptables (or ip6tables) knows MASQUERADE --random-fully (iptables >= 1.6.2). */
export async function supportsRandomFully(runner: IpRunner): Promise<boolean> {
  try {
    const v = await runner.run(['--version']);
    const m = /v(\d+)\.(\d+)\.(\d+)/.exec(v);
    if (!m) return false;
    const [a, b, c] = [Number(m[1]), Number(m[2]), Number(m[3])];
    return a > 1 || (a === 1 && (b > 6 || (b === 6 && c >= 2)));
  } catch {
    return false;
  }
}

export class IptablesKeeper {
  private timer: NodeJS.Timeout | null = null;
  private sets: IptablesRule[][] = [];

  constructor(
    private readonly runner: IpRunner = new IpRoute({ binary: 'iptables' }),
    private readonly resyncSeconds = 5,
  ) {}

  private async exists(r: IptablesRule): Promise<boolean> {
    try {
      await this.runner.run(['-w', '5', '-t', r.table, '-C', r.chain, ...r.spec]);
      return true;
    } catch (err) {
      if (err instanceof IpCommandError && err.exitCode === 1) return false;
      throw err;
    }
  }

  /**
   * Make the set present and in order. As flannel does, a set with any rule
   * missing is removed and appended again whole, so the order stays right.
   */
  async ensure(rules: IptablesRule[]): Promise<void> {
    let complete = true;
    for (const r of rules) if (!(await this.exists(r))) complete = false;
    if (complete) return;
    await this.remove(rules);
    for (const r of rules) await this.runner.run(['-w', '5', '-t', r.table, '-A', r.chain, ...r.spec]);
    log.info('installed rules', { table: rules[0]?.table, chain: rules[0]?.chain, count: rules.length });
  }

  async remove(rules: IptablesRule[]): Promise<void> {
    for (const r of rules) {
      try {
        await this.runner.run(['-w', '5', '-t', r.table, '-D', r.chain, ...r.spec]);
      } catch (err) {
        if (!(err instanceof IpCommandError)) throw err; // already gone
      }
    }
  }

  /** Install now and keep re-checking every resyncSeconds. */
  async keep(rules: IptablesRule[]): Promise<void> {
    this.sets.push(rules);
    await this.ensure(rules);
    if (!this.timer && this.resyncSeconds > 0) {
      this.timer = setInterval(() => {
        for (const set of this.sets) {
          this.ensure(set).catch((err: Error) => log.warn('iptables resync failed', { error: err.message }));
        }
      }, this.resyncSeconds * 1000);
      this.timer.unref();
    }
  }

  async teardown(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    for (const set of this.sets.splice(0)) await this.remove(set);
  }
}
