import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseIP4Net, parseIP6Net } from '../../src/net/ipaddr.js';
import { IpCommandError, type IpRunner } from '../../src/net/iproute.js';
import { forwardRules, IptablesKeeper, masqRules, masqRules6, supportsRandomFully } from '../../src/net/iptables.js';
import { nftRuleset6 } from '../../src/net/nftables.js';

/** A fake iptables: a list of installed rules; -C fails with exit 1 when absent. */
class FakeIptables implements IpRunner {
  rules: string[] = [];
  log: string[] = [];
  async run(args: readonly string[]): Promise<string> {
    this.log.push(args.join(' '));
    if (args[0] === '--version') return 'iptables v1.8.9 (nf_tables)\n';
    const [, , , table, op, chain, ...spec] = args; // -w 5 -t TABLE OP CHAIN SPEC...
    const rule = `${table} ${chain} ${spec.join(' ')}`;
    const i = this.rules.indexOf(rule);
    if (op === '-C' && i < 0) throw new IpCommandError(args, 'iptables: Bad rule (does a matching rule exist in that chain?).', 1);
    if (op === '-D') {
      if (i < 0) throw new IpCommandError(args, 'does a matching rule exist', 1);
      this.rules.splice(i, 1);
    }
    if (op === '-A') this.rules.push(rule);
    return '';
  }
  async runIgnoringMissing(args: readonly string[]): Promise<string> {
    return this.run(args);
  }
}

test('masquerade rules are flannel\'s, in flannel\'s order', () => {
  const rules = masqRules(parseIP4Net('10.5.0.0/16'), parseIP4Net('10.5.81.0/24'), true).map((r) => `${r.table} ${r.chain} ${r.spec.join(' ')}`);
  assert.deepEqual(rules, [
    'nat POSTROUTING -s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment flanneld masq -j RETURN',
    'nat POSTROUTING -s 10.5.0.0/16 ! -d 224.0.0.0/4 -m comment --comment flanneld masq -j MASQUERADE --random-fully',
    'nat POSTROUTING ! -s 10.5.0.0/16 -d 10.5.81.0/24 -m comment --comment flanneld masq -j RETURN',
    'nat POSTROUTING ! -s 10.5.0.0/16 -d 10.5.0.0/16 -m comment --comment flanneld masq -j MASQUERADE --random-fully',
  ]);
  assert.deepEqual(
    forwardRules(parseIP4Net('10.5.0.0/16')).map((r) => r.spec.join(' ')),
    ['-s 10.5.0.0/16 -m comment --comment flanneld forward -j ACCEPT', '-d 10.5.0.0/16 -m comment --comment flanneld forward -j ACCEPT'],
  );
});

test('IPv6: flannel\'s MasqIP6Rules (multicast ff00::/8 excepted) and ForwardRules over IPv6Network; nftables table ip6 flannel-ipv6', () => {
  const rules = masqRules6(parseIP6Net('fd00:64::/56'), parseIP6Net('fd00:64:0:3::/64'), false).map((r) => `${r.table} ${r.chain} ${r.spec.join(' ')}`);
  assert.deepEqual(rules, [
    'nat POSTROUTING -s fd00:64::/56 -d fd00:64::/56 -m comment --comment flanneld masq -j RETURN',
    'nat POSTROUTING -s fd00:64::/56 ! -d ff00::/8 -m comment --comment flanneld masq -j MASQUERADE',
    'nat POSTROUTING ! -s fd00:64::/56 -d fd00:64:0:3::/64 -m comment --comment flanneld masq -j RETURN',
    'nat POSTROUTING ! -s fd00:64::/56 -d fd00:64::/56 -m comment --comment flanneld masq -j MASQUERADE',
  ]);
  assert.deepEqual(
    forwardRules(parseIP6Net('fd00:64::/56')).map((r) => r.spec.join(' ')),
    ['-s fd00:64::/56 -m comment --comment flanneld forward -j ACCEPT', '-d fd00:64::/56 -m comment --comment flanneld forward -j ACCEPT'],
  );
  const t = nftRuleset6(parseIP6Net('fd00:64::/56'), parseIP6Net('fd00:64:0:3::/64'), { masq: true, forward: false });
  assert.match(t, /^add table ip6 flannel-ipv6\nflush table ip6 flannel-ipv6\ntable ip6 flannel-ipv6 \{/);
  assert.match(t, /    ip6 saddr fd00:64::\/56 ip6 daddr != ff00::\/8 masquerade fully-random\n/);
  assert.match(t, /    ip6 saddr != fd00:64::\/56 ip6 daddr fd00:64:0:3::\/64 return\n/);
  assert.doesNotMatch(t, /chain forward/);
});

test('ensure installs a missing set whole and in order, resync repairs a flushed rule, teardown removes', async () => {
  const ipt = new FakeIptables();
  assert.equal(await supportsRandomFully(ipt), true);
  const keeper = new IptablesKeeper(ipt, 0);
  const rules = masqRules(parseIP4Net('10.5.0.0/16'), parseIP4Net('10.5.81.0/24'), false);
  await keeper.keep(rules);
  assert.equal(ipt.rules.length, 4);
  const before = [...ipt.rules];
  await keeper.ensure(rules);
  assert.deepEqual(ipt.rules, before, 'nothing changes when all are present');
  ipt.rules.splice(1, 1); // somebody deleted one
  ipt.rules.push('nat POSTROUTING -j SOMETHING-ELSE');
  await keeper.ensure(rules);
  assert.deepEqual(ipt.rules.filter((r) => r.includes('flanneld')), before, 'whole set back, in order');
  await keeper.teardown();
  assert.deepEqual(ipt.rules, ['nat POSTROUTING -j SOMETHING-ELSE']);
});
