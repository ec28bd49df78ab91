/**
 * Writes Node objects into a kube-apiserver for bench/kube-nodes.ts, as a
 * cluster of flannel daemons would leave them: each with a podCIDR, flannel's
 * annotations (vxlan) and a kubelet-sized status (addresses, capacity,
 * conditions, a list of images), so the daemon decodes nodes of a real size.
 *
 *   node kube-loader.js SERVER CA_FILE TOKEN create FIRST COUNT
 *   node kube-loader.js SERVER CA_FILE TOKEN change FIRST COUNT ROUND
 *
 * Run inside the API server's network namespace. Node i is bench-<i> with
 * podCIDR 10.<i/256>.<i%256>.0/24 and PublicIP 198.18.<i/256>.<i%256>;
 * `change` moves each node's public-ip to 198.19.x.y (ROUND picks which), as a node
 * re-addressed would.
 */
import { readFileSync } from 'node:fs';
import { KubeClient } from '../src/subnet/kube/client.js';

const [server, caFile, token, mode, firstArg, countArg, roundArg] = process.argv.slice(2);
const first = Number(firstArg);
const count = Number(countArg);
const P = 'flannel.alpha.coreos.com/';
const client = new KubeClient({ server: server!, ca: readFileSync(caFile!), token, source: 'bench' });
const CONCURRENCY = 24;

const octets = (i: number) => `${(i >> 8) & 255}.${i & 255}`;
const mac = (i: number) => `02:42:${((i >> 16) & 255).toString(16).padStart(2, '0')}:${((i >> 8) & 255).toString(16).padStart(2, '0')}:${(i & 255).toString(16).padStart(2, '0')}:01`;

function annotations(i: number, ipBase: string): Record<string, string> {
  return {
    [`${P}kube-subnet-manager`]: 'true',
    [`${P}backend-type`]: 'vxlan',
    [`${P}backend-data`]: JSON.stringify({ VNI: 1, VtepMAC: mac(i) }),
    [`${P}public-ip`]: `${ipBase}.${octets(i)}`,
    'node.alpha.kubernetes.io/ttl': '0',
    'volumes.kubernetes.io/controller-managed-attach-detach': 'true',
  };
}

/** A kubelet's status of about 4 KB: what list and watch carry for every node of a real cluster. */
function status(i: number): Record<string, unknown> {
  const images = Array.from({ length: 12 }, (_, k) => ({
    names: [`registry.example/team/app-${k}@sha256:${'ab'.repeat(32)}`, `registry.example/team/app-${k}:v1.${k}.0`],
    sizeBytes: 100_000_000 + k,
  }));
  return {
    addresses: [
      { type: 'InternalIP', address: `198.18.${octets(i)}` },
      { type: 'Hostname', address: `bench-${i}` },
    ],
    capacity: { cpu: '8', memory: '32863104Ki', pods: '110', 'ephemeral-storage': '101430960Ki' },
    allocatable: { cpu: '8', memory: '32760704Ki', pods: '110', 'ephemeral-storage': '93478772582' },
    nodeInfo: {
      machineID: 'a'.repeat(32), systemUUID: 'b'.repeat(36), bootID: 'c'.repeat(36), kernelVersion: '6.1.0-27-amd64', osImage: 'Debian GNU/Linux 12 (bookworm)',
      containerRuntimeVersion: 'containerd://1.7.22', kubeletVersion: 'v1.20.2', kubeProxyVersion: 'v1.20.2', operatingSystem: 'linux', architecture: 'amd64',
    },
    images,
  };
}

async function pool(items: number[], fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

const ids = Array.from({ length: count }, (_, k) => first + k);
if (mode === 'create') {
  await pool(ids, async (i) => {
    await client.request('POST', '/api/v1/nodes', {
      apiVersion: 'v1',
      kind: 'Node',
      metadata: { name: `bench-${i}`, labels: { 'kubernetes.io/hostname': `bench-${i}`, 'kubernetes.io/os': 'linux' }, annotations: annotations(i, '198.18') },
      spec: { podCIDR: `10.${octets(i)}.0/24`, podCIDRs: [`10.${octets(i)}.0/24`] },
    });
    await client.request('PATCH', `/api/v1/nodes/bench-${i}/status`, { status: status(i) }, 'application/strategic-merge-patch+json');
  });
} else if (mode === 'change') {
  const base = Number(roundArg ?? 1) % 2 === 1 ? '198.19' : '198.18';
  await pool(ids, async (i) => {
    await client.request('PATCH', `/api/v1/nodes/bench-${i}/status`, { metadata: { annotations: { [`${P}public-ip`]: `${base}.${octets(i)}` } } }, 'application/strategic-merge-patch+json');
  });
} else {
  throw new Error(`unknown mode ${mode}`);
}
client.close();
