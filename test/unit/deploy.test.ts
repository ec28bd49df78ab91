/**
 * The deployment files: the systemd unit passes `systemd-analyze verify`
 * (pointed at this checkout's flanneld), and the Kubernetes manifest is
 * flannel's shape with no more privilege than flanneld uses.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT, FLANNELD } from '../helpers/daemon.js';

const hasSystemdAnalyze = spawnSync('systemd-analyze', ['--version']).status === 0;

test('deploy/flanneld.service passes systemd-analyze verify', { skip: hasSystemdAnalyze ? false : 'systemd-analyze is not installed' }, () => {
  const dir = mkdtempSync(join(tmpdir(), 'fts-unit-'));
  const unit = readFileSync(join(REPO_ROOT, 'deploy', 'flanneld.service'), 'utf8').replace('/usr/local/bin/flanneld', FLANNELD);
  writeFileSync(join(dir, 'flanneld.service'), unit);
  const r = spawnSync('systemd-analyze', ['verify', join(dir, 'flanneld.service')], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr.trim(), '', r.stderr);
  // The environment file it reads parses as shell assignments.
  execFileSync('sh', ['-n', join(REPO_ROOT, 'deploy', 'flanneld.env')]);
});

test('deploy/kube-flannel.yml: flannel\'s objects, least privilege, probes and host paths', () => {
  const docs = parseAllDocuments(readFileSync(join(REPO_ROOT, 'deploy', 'kube-flannel.yml'), 'utf8')).map((d) => d.toJS() as Record<string, any>).filter(Boolean);
  const kinds = docs.map((d) => `${d.kind}/${d.metadata.name}`);
  assert.deepEqual(kinds, ['Namespace/kube-flannel', 'ClusterRole/flannel', 'ClusterRoleBinding/flannel', 'ServiceAccount/flannel', 'ConfigMap/kube-flannel-cfg', 'DaemonSet/kube-flannel-ds']);
  const role = docs.find((d) => d.kind === 'ClusterRole')!;
  assert.deepEqual(role.rules, [
    { apiGroups: [''], resources: ['pods'], verbs: ['get'] },
    { apiGroups: [''], resources: ['nodes'], verbs: ['get', 'list', 'watch'] },
    { apiGroups: [''], resources: ['nodes/status'], verbs: ['patch'] },
  ]);
  const cm = docs.find((d) => d.kind === 'ConfigMap')!;
  assert.deepEqual(JSON.parse(cm.data['net-conf.json']), { Network: '10.244.0.0/16', EnableNFTables: false, Backend: { Type: 'vxlan' } });
  assert.equal(JSON.parse(cm.data['cni-conf.json']).plugins[0].type, 'flannel');
  const ds = docs.find((d) => d.kind === 'DaemonSet')!.spec.template.spec;
  assert.equal(ds.hostNetwork, true);
  assert.equal(ds.priorityClassName, 'system-node-critical');
  assert.deepEqual(ds.tolerations, [{ operator: 'Exists', effect: 'NoSchedule' }]);
  const c = ds.containers[0];
  assert.deepEqual(c.args, ['--ip-masq', '--kube-subnet-mgr', '--healthz-port=8081']);
  assert.equal(c.livenessProbe.httpGet.path, '/healthz');
  assert.equal(c.readinessProbe.httpGet.path, '/readyz');
  assert.deepEqual(c.securityContext, { privileged: false, capabilities: { add: ['NET_ADMIN', 'NET_RAW'] } });
  assert.deepEqual(ds.volumes.map((v: { hostPath?: { path: string } }) => v.hostPath?.path).filter(Boolean), ['/run/flannel', '/opt/cni/bin', '/etc/cni/net.d', '/run/xtables.lock']);
  assert.deepEqual(ds.initContainers.map((i: { name: string }) => i.name), ['install-cni-plugin', 'install-cni']);
});
