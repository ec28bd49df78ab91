/**
 * Where the API server is and how to authenticate, found as flannel finds
 * it (client-go's BuildConfigFromFlags): --kubeconfig-file when given
 * (its current context), --kube-api-url overriding the server, else the
 * in-cluster config a pod gets (KUBERNETES_SERVICE_HOST/PORT and the
 * ServiceAccount's token and CA). $KUBECONFIG is not read, as flannel.
 *
 * These are host settings (flags, environment, files of this host), never
 * anything from the API server or the network config.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, isAbsolute, join } from 'node:path';

/** The YAML parser, loaded only to read a kubeconfig (a pod's in-cluster config needs none; loading it costs ~0.1 s of CPU). */
const parseYaml = (text: string): unknown => (createRequire(import.meta.url)('yaml') as typeof import('yaml')).parse(text);

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

export interface KubeConnection {
  /** https://host:port (no trailing slash). */
  server: string;
  /** PEM of the CA that signed the server's certificate; absent: the system's CAs. */
  ca?: Buffer;
  insecureSkipTLSVerify?: boolean;
  /** A fixed bearer token (kubeconfig `token`). */
  token?: string;
  /** A file holding the bearer token, re-read as it rotates (in-cluster, kubeconfig `tokenFile`). */
  tokenFile?: string;
  clientCert?: Buffer;
  clientKey?: Buffer;
  /** Where the settings came from, for the log (never a secret). */
  source: string;
}

export class KubeConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KubeConfigError';
  }
}

export interface KubeConnectionOptions {
  apiUrl: string;
  kubeconfigFile: string;
  env: NodeJS.ProcessEnv;
  /** The ServiceAccount directory (tests point it elsewhere; a pod has the default). */
  serviceAccountDir?: string;
}

export function resolveKubeConnection(o: KubeConnectionOptions): KubeConnection {
  if (o.kubeconfigFile) {
    const c = fromKubeconfig(o.kubeconfigFile);
    return o.apiUrl ? { ...c, server: trimUrl(o.apiUrl), source: `${c.source}, server from --kube-api-url` } : c;
  }
  if (o.apiUrl) {
    // client-go: a URL without a kubeconfig talks to it without credentials unless in-cluster files exist.
    const sa = o.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
    const inCluster = tryInCluster(o.env, sa);
    return { ...(inCluster ?? {}), server: trimUrl(o.apiUrl), source: inCluster ? `--kube-api-url with the ServiceAccount in ${sa}` : '--kube-api-url' };
  }
  const sa = o.serviceAccountDir ?? SERVICE_ACCOUNT_DIR;
  const c = tryInCluster(o.env, sa);
  if (!c) {
    throw new KubeConfigError(
      '--kube-subnet-mgr: no API server to talk to: not in a pod (KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are unset) and neither --kubeconfig-file nor --kube-api-url was given',
    );
  }
  return c;
}

function trimUrl(u: string): string {
  let url: URL;
  try {
    url = new URL(u);
  } catch {
    throw new KubeConfigError(`--kube-api-url ${JSON.stringify(u)} is not a URL`);
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new KubeConfigError(`--kube-api-url ${JSON.stringify(u)}: must be https:// (or http://)`);
  return u.replace(/\/+$/, '');
}

function tryInCluster(env: NodeJS.ProcessEnv, dir: string): KubeConnection | null {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) return null;
  const tokenFile = join(dir, 'token');
  let ca: Buffer | undefined;
  try {
    ca = readFileSync(join(dir, 'ca.crt'));
  } catch (err) {
    throw new KubeConfigError(`in-cluster config: cannot read ${join(dir, 'ca.crt')}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  try {
    readFileSync(tokenFile);
  } catch (err) {
    throw new KubeConfigError(`in-cluster config: cannot read the ServiceAccount token ${tokenFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const h = host.includes(':') ? `[${host}]` : host;
  return { server: `https://${h}:${port}`, ca, tokenFile, source: `in-cluster (KUBERNETES_SERVICE_HOST, ${dir})` };
}

type Named<T> = { name?: string } & T;
interface KubeconfigDoc {
  'current-context'?: string;
  clusters?: Named<{ cluster?: Record<string, unknown> }>[];
  users?: Named<{ user?: Record<string, unknown> }>[];
  contexts?: Named<{ context?: { cluster?: string; user?: string } }>[];
}

function fromKubeconfig(path: string): KubeConnection {
  let doc: KubeconfigDoc;
  try {
    doc = parseYaml(readFileSync(path, 'utf8')) as KubeconfigDoc;
  } catch (err) {
    throw new KubeConfigError(`--kubeconfig-file ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  if (!doc || typeof doc !== 'object') throw new KubeConfigError(`--kubeconfig-file ${path}: not a kubeconfig`);
  const base = dirname(path);
  const ctxName = doc['current-context'];
  const ctx = (doc.contexts ?? []).find((c) => c.name === ctxName)?.context ?? (doc.contexts?.length === 1 ? doc.contexts[0]!.context : undefined);
  const cluster = (doc.clusters ?? []).find((c) => c.name === ctx?.cluster)?.cluster ?? (doc.clusters?.length === 1 ? doc.clusters[0]!.cluster : undefined);
  const user = (doc.users ?? []).find((u) => u.name === ctx?.user)?.user ?? (doc.users?.length === 1 ? doc.users[0]!.user : undefined) ?? {};
  if (!cluster || typeof cluster.server !== 'string') throw new KubeConfigError(`--kubeconfig-file ${path}: no cluster server for context ${JSON.stringify(ctxName ?? '')}`);
  const file = (v: unknown): Buffer | undefined => (typeof v === 'string' && v ? readRelative(base, v, path) : undefined);
  const data = (v: unknown): Buffer | undefined => (typeof v === 'string' && v ? Buffer.from(v, 'base64') : undefined);
  if (user.exec || user['auth-provider']) throw new KubeConfigError(`--kubeconfig-file ${path}: exec and auth-provider credentials are not supported; use a token, tokenFile or a client certificate`);
  const tokenFile = typeof user.tokenFile === 'string' && user.tokenFile ? (isAbsolute(user.tokenFile) ? user.tokenFile : join(base, user.tokenFile)) : undefined;
  return {
    server: trimUrl(cluster.server),
    ca: data(cluster['certificate-authority-data']) ?? file(cluster['certificate-authority']),
    insecureSkipTLSVerify: cluster['insecure-skip-tls-verify'] === true,
    token: typeof user.token === 'string' && user.token ? user.token : undefined,
    tokenFile,
    clientCert: data(user['client-certificate-data']) ?? file(user['client-certificate']),
    clientKey: data(user['client-key-data']) ?? file(user['client-key']),
    source: `--kubeconfig-file ${path}`,
  };
}

function readRelative(base: string, p: string, kubeconfig: string): Buffer {
  const full = isAbsolute(p) ? p : join(base, p);
  try {
    return readFileSync(full);
  } catch (err) {
    throw new KubeConfigError(`--kubeconfig-file ${kubeconfig}: cannot read ${full}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}
