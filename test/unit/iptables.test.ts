import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseIP4Net } from '../../src/net/ipaddr.js';
import { IpCommandError, type IpRunner } from '../../src/net/iproute.js';
import { forwardRules, IptablesKeeper, masqRules, supportsRandomFully } from '../../src/net/iptables.js';

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
