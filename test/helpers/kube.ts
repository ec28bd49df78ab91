/**
 * A real kube-apiserver (v1.20.2, etcd, RBAC, tokens) for the Kubernetes
 * tests, started by scripts/kube/run-kube-apiserver.sh inside a network
 * namespace so daemons in other namespaces reach it. The binaries come from
 * KUBE_BIN_DIR, else ../shared/tools/kube (scripts/kube/build-kube-apiserver.sh
 * builds them); without either the tests skip with one message.
 *
 * There is no kubelet or controller-manager: tests create Node objects,
 * mint ServiceAccount tokens with the TokenRequest API and read objects
 * back, all through curl or kubectl inside the API server's namespace.
 */
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { REPO_ROOT } from './daemon.js';
import { run, type ExecResult } from './netns.js';

const RUN_SCRIPT = join(REPO_ROOT, 'scripts', 'kube', 'run-kube-apiserver.sh');

/** Where kube-apiserver(.gz) and kubectl(.gz) are, or null. */
export function kubeBinDir(): string | null {
  const candidates = [process.env.KUBE_BIN_DIR, join(REPO_ROOT, '..', 'shared', 'tools', 'kube')].filter((d): d is string => !!d);
  for (const d of candidates) if (existsSync(join(d, 'kube-apiserver')) || existsSync(join(d, 'kube-apiserver.gz'))) return d;
  return null;
}

export const KUBE_SKIP_MESSAGE =
  'no kube-apiserver: set KUBE_BIN_DIR to a directory holding kube-apiserver and kubectl (bash scripts/kube/build-kube-apiserver.sh debian DIR builds them, ~9 min)';

export interface TestKube {
  dir: string;
  ns: string;
  addr: string;
  server: string;
  caFile: string;
  adminToken: string;
  kubectlBin: string;
  /** kubectl as admin, inside the API server's namespace. */
  kubectl(args: string[], stdin?: string): Promise<ExecResult>;
  /** One API call as admin (curl inside the namespace); JSON in, JSON out. */
  api(method: string, path: string, body?: unknown, contentType?: string): Promise<{ status: number; body: any }>;
  stop(): Promise<void>;
  start(): Promise<void>;
}

export async function startKube(dir: string, ns: string, addr: string): Promise<TestKube> {
  const bin = kubeBinDir();
  if (!bin) throw new Error(KUBE_SKIP_MESSAGE);
  await mkdir(dir, { recursive: true });
  const env = { ...process.env, API_ADDR: addr, KUBE_BIN_DIR: bin };
  const start = async () => {
    const r = await run('ip', ['netns', 'exec', ns, 'bash', RUN_SCRIPT, dir, 'start'], { env, timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(`kube-apiserver did not start: ${r.stdout}\n${r.stderr}`);
  };
  await start();
  const vars: Record<string, string> = {};
  for (const line of (await readFile(join(dir, 'env'), 'utf8')).split('\n')) {
    const i = line.indexOf('=');
    if (i > 0) vars[line.slice(0, i)] = line.slice(i + 1);
  }
  const k: TestKube = {
    dir,
    ns,
    addr,
    server: vars.KUBE_SERVER!,
    caFile: vars.KUBE_CA!,
    adminToken: vars.KUBE_ADMIN_TOKEN!,
    kubectlBin: vars.KUBECTL!,
    kubectl: (args, stdin) =>
      run('ip', ['netns', 'exec', ns, vars.KUBECTL!, `--kubeconfig=${join(dir, 'kubeconfig')}`, ...args], { input: stdin, timeoutMs: 60_000 }),
    api: async (method, path, body, contentType = 'application/json') => {
      const args = ['netns', 'exec', ns, 'curl', '-sS', '-X', method, '--cacert', vars.KUBE_CA!, '-H', `Authorization: Bearer ${vars.KUBE_ADMIN_TOKEN}`, '-w', '\n%{http_code}'];
      let input: string | undefined;
      if (body !== undefined) {
        args.push('-H', `Content-Type: ${contentType}`, '--data-binary', '@-');
        input = JSON.stringify(body);
      }
      args.push(`${vars.KUBE_SERVER}${path}`);
      const r = await run('ip', args, { input, timeoutMs: 30_000 });
      const nl = r.stdout.lastIndexOf('\n');
      const status = Number(r.stdout.slice(nl + 1));
      let parsed: unknown = null;
      try {
        parsed = JSON.parse(r.stdout.slice(0, nl));
      } catch {
        parsed = r.stdout.slice(0, nl);
      }
      return { status, body: parsed };
    },
    stop: async () => {
      await run('bash', [RUN_SCRIPT, dir, 'stop'], { env, timeoutMs: 30_000 });
    },
    start,
  };
  return k;
}

/** A Node object as a kubelet would register it (without the kubelet): name, optional podCIDRs, an InternalIP. */
export async function createNode(k: TestKube, name: string, podCIDRs: string[], internalIP: string): Promise<void> {
  const node = {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name, labels: { 'kubernetes.io/os': 'linux', 'kubernetes.io/hostname': name } },
    spec: podCIDRs.length ? { podCIDR: podCIDRs[0], podCIDRs } : {},
  };
  const r = await k.api('POST', '/api/v1/nodes', node);
  if (r.status !== 201) throw new Error(`create node ${name}: ${r.status} ${JSON.stringify(r.body)}`);
  const st = await k.api('PATCH', `/api/v1/nodes/${name}/status`, { status: { addresses: [{ type: 'InternalIP', address: internalIP }] } }, 'application/strategic-merge-patch+json');
  if (st.status !== 200) throw new Error(`node ${name} status: ${st.status} ${JSON.stringify(st.body)}`);
}

export async function getNode(k: TestKube, name: string): Promise<any> {
  const r = await k.api('GET', `/api/v1/nodes/${name}`);
  return r.status === 200 ? r.body : null;
}

/**
 * A ServiceAccount token from the TokenRequest API, bound to a Secret so
 * the test can revoke it by deleting that Secret (the way a rotated bound
 * token stops working).
 */
export async function mintToken(k: TestKube, ns: string, sa: string, secretName: string): Promise<string> {
  const s = await k.api('POST', `/api/v1/namespaces/${ns}/secrets`, { apiVersion: 'v1', kind: 'Secret', metadata: { name: secretName } });
  if (s.status !== 201) throw new Error(`secret ${secretName}: ${s.status} ${JSON.stringify(s.body)}`);
  const r = await k.api('POST', `/api/v1/namespaces/${ns}/serviceaccounts/${sa}/token`, {
    apiVersion: 'authentication.k8s.io/v1',
    kind: 'TokenRequest',
    spec: { expirationSeconds: 3600, boundObjectRef: { kind: 'Secret', apiVersion: 'v1', name: secretName, uid: s.body.metadata.uid } },
  });
  if (r.status !== 201) throw new Error(`token for ${ns}/${sa}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.status.token as string;
}

/** The files a pod's ServiceAccount mount holds (token, ca.crt, namespace), in `dir`. */
export async function writeServiceAccountDir(k: TestKube, dir: string, token: string, namespace = 'kube-flannel'): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'token'), token, { mode: 0o600 });
  await writeFile(join(dir, 'ca.crt'), await readFile(k.caFile));
  await writeFile(join(dir, 'namespace'), namespace);
}
