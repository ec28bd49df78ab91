/**
 * Starts a real single-member etcd (Debian's etcd-server, /usr/bin/etcd) on
 * loopback for tests: free client and peer ports, a temp data dir, and
 * optionally TLS with client-certificate authentication (certificates made
 * with openssl on the fly). The process is killed and its directory removed
 * when the test process exits, whatever happens.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync, createWriteStream } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const ETCD_BIN = process.env.ETCD_BIN ?? '/usr/bin/etcd';
export const ETCDCTL_BIN = process.env.ETCDCTL_BIN ?? '/usr/bin/etcdctl';

export interface EtcdOptions {
  tls?: boolean;
  /** Run etcd inside this network namespace (for daemons in namespaces to reach it). */
  netns?: string;
  /** Address to listen on (default 127.0.0.1); with netns, an address of that namespace. */
  host?: string;
}

export interface TestEtcd {
  /** Client URL, http://127.0.0.1:PORT or https://127.0.0.1:PORT. */
  endpoint: string;
  /** TLS material (only with tls: true). */
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  dataDir: string;
  /** Graceful stop (SIGTERM), resolves when the process is gone. */
  stop(): Promise<void>;
  /** SIGKILL, resolves when the process is gone. */
  kill(): Promise<void>;
  /** (Re)start with the same data dir and ports; resolves when healthy. */
  start(): Promise<void>;
  /** Stop and delete every file. */
  cleanup(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

function openssl(args: string[], cwd: string): void {
  const r = spawnSync('openssl', args, { cwd, encoding: 'utf8' });
  if (r.error || r.status !== 0) throw new Error(`openssl ${args.join(' ')} failed: ${r.error?.message ?? r.stderr}`);
}

/** CA, server cert (SAN IP:127.0.0.1) and client cert, EC keys for speed. */
function makeCerts(dir: string): { ca: string; serverCert: string; serverKey: string; clientCert: string; clientKey: string } {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=flannel-ts test CA'], dir);
  const sign = (name: string, cn: string, ext: string) => {
    writeFileSync(join(dir, `${name}.ext`), ext);
    openssl(['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`], dir);
  };
  sign('server', '127.0.0.1', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n');
  sign('client', 'flannel-client', 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n');
  return {
    ca: join(dir, 'ca.crt'),
    serverCert: join(dir, 'server.crt'),
    serverKey: join(dir, 'server.key'),
    clientCert: join(dir, 'client.crt'),
    clientKey: join(dir, 'client.key'),
  };
}

const live = new Set<ChildProcess>();
const dirs = new Set<string>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const p of live) p.kill('SIGKILL');
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
  for (const sig of ['SIGINT', 'SIGTERM'] as const) {
    process.once(sig, () => process.exit(130));
  }
}

export async function startEtcd(opts: EtcdOptions = {}): Promise<TestEtcd> {
  if (!existsSync(ETCD_BIN)) {
    throw new Error(`etcd binary not found at ${ETCD_BIN}: install etcd-server (run the project's install script, scripts/install-system-deps.sh) or set ETCD_BIN`);
  }
  installExitHook();
  const root = mkdtempSync(join(tmpdir(), 'flannel-ts-etcd-'));
  dirs.add(root);
  const dataDir = join(root, 'data');
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const scheme = opts.tls ? 'https' : 'http';
  const host = opts.host ?? '127.0.0.1';
  const endpoint = `${scheme}://${host}:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  // `ip netns exec` execs the command, so the child's pid is etcd's own and signals reach it.
  const inNs = (cmd: string, cmdArgs: string[]): [string, string[]] => (opts.netns ? ['ip', ['netns', 'exec', opts.netns, cmd, ...cmdArgs]] : [cmd, cmdArgs]);
  const certs = opts.tls ? makeCerts(root) : null;

  const args = [
    '--name', 'test',
    '--data-dir', dataDir,
    '--listen-client-urls', endpoint,
    '--advertise-client-urls', endpoint,
    '--listen-peer-urls', peer,
    '--initial-advertise-peer-urls', peer,
    '--initial-cluster', `test=${peer}`,
    '--initial-cluster-state', 'new',
    '--log-level', 'warn',
    '--logger', 'zap',
  ];
  if (certs) {
    args.push('--cert-file', certs.serverCert, '--key-file', certs.serverKey, '--client-cert-auth', '--trusted-ca-file', certs.ca);
  }
  const ctlTls = certs ? ['--cacert', certs.ca, '--cert', certs.clientCert, '--key', certs.clientKey] : [];

  let proc: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();

  const healthy = (): boolean => {
    const [cmd, cmdArgs] = inNs(ETCDCTL_BIN, ['--endpoints', endpoint, ...ctlTls, '--dial-timeout=1s', '--command-timeout=1s', 'endpoint', 'health']);
    const r = spawnSync(cmd, cmdArgs, {
      encoding: 'utf8',
      env: { ...process.env, ETCDCTL_API: '3' },
      timeout: 3000,
    });
    return r.status === 0;
  };

  const start = async (): Promise<void> => {
    if (proc) throw new Error('test etcd already running');
    const logFile = createWriteStream(join(root, 'etcd.log'), { flags: 'a' });
    const [cmd, cmdArgs] = inNs(ETCD_BIN, args);
    const p = spawn(cmd, cmdArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
    p.stdout!.pipe(logFile);
    p.stderr!.pipe(logFile);
    proc = p;
    live.add(p);
    exited = new Promise((resolve) => p.once('exit', () => {
      live.delete(p);
      if (proc === p) proc = null;
      resolve();
    }));
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      if (!proc) throw new Error(`test etcd exited during start-up; see ${join(root, 'etcd.log')}`);
      if (healthy()) return;
      await new Promise((r) => setTimeout(r, 150));
    }
    throw new Error(`test etcd on ${endpoint} not healthy after 20 s; see ${join(root, 'etcd.log')}`);
  };

  const signal = async (sig: NodeJS.Signals): Promise<void> => {
    const p = proc;
    if (!p) return;
    p.kill(sig);
    const done = exited;
    const t = setTimeout(() => p.kill('SIGKILL'), 5000);
    await done;
    clearTimeout(t);
  };

  await start();
  const etcd: TestEtcd = {
    endpoint,
    dataDir,
    stop: () => signal('SIGTERM'),
    kill: () => signal('SIGKILL'),
    start,
    cleanup: async () => {
      await signal('SIGKILL');
      rmSync(root, { recursive: true, force: true });
      dirs.delete(root);
    },
  };
  if (certs) {
    etcd.caFile = certs.ca;
    etcd.certFile = certs.clientCert;
    etcd.keyFile = certs.clientKey;
  }
  return etcd;
}
