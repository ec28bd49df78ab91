import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseWorkersVariable, parseOptions, usage, UsageError } from '../../src/cli/options.js';

test('flannel defaults', () => {
  const o = parseOptions([], {});
  assert.deepEqual(o.etcdEndpoints, ['http://127.0.0.1:4001', 'http://127.0.0.1:2379']);
  assert.equal(o.etcdPrefix, '/coreos.com/network');
  assert.equal(o.subnetFile, '/run/flannel/subnet.env');
  assert.equal(o.subnetLeaseRenewMargin, 60);
  assert.equal(o.ipMasq, false);
  assert.equal(o.healthzIP, '0.0.0.0');
  assert.equal(o.healthzPort, 0);
  assert.deepEqual(o.iface, []);
});

test('Go flag syntax: -flag, --flag=value, --flag value, repeatable --iface, bare bools', () => {
  const o = parseOptions(['-etcd-endpoints=http://a:2379,http://b:2379', '--iface', 'eth0', '--iface=192.0.2.1', '--ip-masq', '--healthz-port', '8471', '--ip-masq=false'], {});
  assert.deepEqual(o.etcdEndpoints, ['http://a:2379', 'http://b:2379']);
  assert.deepEqual(o.iface, ['eth0', '192.0.2.1']);
  assert.equal(o.ipMasq, false);
  assert.equal(o.healthzPort, 8471);
});

test('FLANNELD_* environment, command line wins', () => {
  const env = { FLANNELD_ETCD_PREFIX: '/x/network', FLANNELD_IP_MASQ: 'true', FLANNELD_PUBLIC_IP: '192.0.2.9', FLANNELD_SUBNET_FILE: '/tmp/a.env' };
  const o = parseOptions(['--subnet-file=/tmp/b.env'], env);
  assert.equal(o.etcdPrefix, '/x/network');
  assert.equal(o.ipMasq, true);
  assert.equal(o.publicIP, '192.0.2.9');
  assert.equal(o.subnetFile, '/tmp/b.env');
});

test('clear usage errors', () => {
  assert.throws(() => parseOptions(['--nope'], {}), (e: unknown) => e instanceof UsageError && /unknown flag --nope/.test(e.message));
  assert.throws(() => parseOptions(['--healthz-port=abc'], {}), /not an integer/);
  assert.throws(() => parseOptions(['--subnet-lease-renew-margin=0'], {}), /between 1 and 1439/);
  assert.throws(() => parseOptions(['--iface-regex=('], {}), /invalid --iface-regex/);
  assert.equal(parseOptions(['--kube-subnet-mgr'], {}).kubeSubnetMgr, true);
  assert.throws(() => parseOptions(['--kube-subnet-mgr', '--local-store', '/tmp/x'], {}), /two subnet stores/);
  assert.throws(() => parseOptions(['--etcd-prefix'], {}), /needs a value/);
  assert.throws(() => parseOptions(['stray'], {}), /unexpected argument/);
});

test('glog flags flannel users pass are accepted', () => {
  assert.doesNotThrow(() => parseOptions(['-v=2', '--logtostderr'], {}));
});

test('help lists every flannel flag', () => {
  const u = usage();
  for (const f of ['etcd-endpoints', 'etcd-prefix', 'etcd-cafile', 'etcd-certfile', 'etcd-keyfile', 'iface', 'iface-regex', 'public-ip', 'ip-masq', 'subnet-file', 'healthz-port', 'local-store']) {
    assert.match(u, new RegExp(`--${f}[=\\n ]`));
  }
});

test('FLANNEL_UDP_WORKERS: unset or a whole number 1..8, anything else named in the error', () => {
  assert.equal(parseWorkersVariable(undefined), undefined);
  assert.equal(parseWorkersVariable(''), undefined);
  assert.equal(parseWorkersVariable('3'), 3);
  for (const bad of ['0', '9', '2.5', 'four', '-1']) assert.throws(() => parseWorkersVariable(bad), new RegExp(`FLANNEL_UDP_WORKERS must be a whole number 1\\.\\.8, got "${bad.replace('.', '\\.')}"`));
});
