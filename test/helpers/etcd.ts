/**
 * Starts a real single-member etcd (Debian's etcd-server, /usr/bin/etcd) on
 * loopback for tests: free client and peer ports, a temp data dir, and
 * optionally TLS with client-certificate authentication (certificates made
 * with openssl on the fly). The process is killed and its directory removed
 * when the test process exits, whatever happens.
 */
import { execFile, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
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

const execFileAsync = promisify(execFile);

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

/** CA, server cert (SAN IP:127.0.0.1 and the listen address) and client cert, EC keys for speed. */
function makeCerts(dir: string, host = '127.0.0.1'): { ca: string; serverCert: string; serverKey: string; clientCert: string; clientKey: string } {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  openssl(['req', '-x509', ...ec, '-keyout', 'ca.key', '-out', 'ca.crt', '-days', '2', '-subj', '/CN=flannel-ts test CA'], dir);
  const sign = (name: string, cn: string, ext: string) => {
    writeFileSync(join(dir, `${name}.ext`), ext);
    openssl(['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', `/CN=${cn}`], dir);
    openssl(['x509', '-req', '-in', `${name}.csr`, '-CA', 'ca.crt', '-CAkey', 'ca.key', '-CAcreateserial', '-out', `${name}.crt`, '-days', '2', '-extfile', `${name}.ext`], dir);
  };
  const san = host === '127.0.0.1' ? 'IP:127.0.0.1' : `IP:127.0.0.1,IP:${host}`;
  sign('server', host, `subjectAltName=${san}\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n`);
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

interface MemberSpec {
  name: string;
  root: string;
  netns?: string;
  endpoint: string;
  peer: string;
  initialCluster: string;
  certs: ReturnType<typeof makeCerts> | null;
}

interface Member {
  endpoint: string;
  start(): Promise<void>;
  signal(sig: NodeJS.Signals): Promise<void>;
  /** The etcd process runs. */
  running(): boolean;
}

/** One etcd process; several of them make a cluster (their start() must overlap for the first election). */
function etcdMember(m: MemberSpec): Member {
  // `ip netns exec` execs the command, so the child's pid is etcd's own and signals reach it.
  const inNs = (cmd: string, cmdArgs: string[]): [string, string[]] => (m.netns ? ['ip', ['netns', 'exec', m.netns, cmd, ...cmdArgs]] : [cmd, cmdArgs]);
  const args = [
    '--name', m.name,
    '--data-dir', join(m.root, `data-${m.name}`),
    '--listen-client-urls', m.endpoint,
    '--advertise-client-urls', m.endpoint,
    '--listen-peer-urls', m.peer,
    '--initial-advertise-peer-urls', m.peer,
    '--initial-cluster', m.initialCluster,
    '--initial-cluster-state', 'new',
    '--log-level', 'warn',
    '--logger', 'zap',
  ];
  if (m.certs) {
    args.push('--cert-file', m.certs.serverCert, '--key-file', m.certs.serverKey, '--client-cert-auth', '--trusted-ca-file', m.certs.ca);
  }
  const ctlTls = m.certs ? ['--cacert', m.certs.ca, '--cert', m.certs.clientCert, '--key', m.certs.clientKey] : [];
  let proc: ChildProcess | null = null;
  let exited: Promise<void> = Promise.resolve();
  const log = join(m.root, `etcd-${m.name}.log`);

  const healthy = (): boolean => {
    const [cmd, cmdArgs] = inNs(ETCDCTL_BIN, ['--endpoints', m.endpoint, ...ctlTls, '--dial-timeout=1s', '--command-timeout=1s', 'endpoint', 'health']);
    const r = spawnSync(cmd, cmdArgs, { encoding: 'utf8', env: { ...process.env, ETCDCTL_API: '3' }, timeout: 3000 });
    return r.status === 0;
  };

  return {
    endpoint: m.endpoint,
    running: () => proc !== null,
    start: async () => {
      if (proc) throw new Error(`test etcd ${m.name} already running`);
      const logFile = createWriteStream(log, { flags: 'a' });
      const [cmd, cmdArgs] = inNs(ETCD_BIN, args);
      const p = spawn(cmd, cmdArgs, { stdio: ['ignore', 'pipe', 'pipe'] });
      p.stdout!.pipe(logFile);
      p.stderr!.pipe(logFile);
      proc = p;
      live.add(p);
      exited = new Promise((resolve) =>
        p.once('exit', () => {
          live.delete(p);
          if (proc === p) proc = null;
          resolve();
        }),
      );
      const deadline = Date.now() + 20_000;
      while (Date.now() < deadline) {
        if (!proc) throw new Error(`test etcd ${m.name} exited during start-up; see ${log}`);
        if (healthy()) return;
        await new Promise((r) => setTimeout(r, 150));
      }
      throw new Error(`test etcd ${m.name} on ${m.endpoint} not healthy after 20 s; see ${log}`);
    },
    signal: async (sig) => {
      const p = proc;
      if (!p) return;
      p.kill(sig);
      const done = exited;
      const t = setTimeout(() => p.kill('SIGKILL'), 5000);
      await done;
      clearTimeout(t);
    },
  };
}

function requireEtcd(): void {
  if (!existsSync(ETCD_BIN)) {
    throw new Error(`etcd binary not found at ${ETCD_BIN}: install etcd-server (run the project's install script, scripts/install-system-deps.sh) or set ETCD_BIN`);
  }
  installExitHook();
}

export async function startEtcd(opts: EtcdOptions = {}): Promise<TestEtcd> {
  requireEtcd();
  const root = mkdtempSync(join(tmpdir(), 'flannel-ts-etcd-'));
  dirs.add(root);
  const [clientPort, peerPort] = [await freePort(), await freePort()];
  const scheme = opts.tls ? 'https' : 'http';
  const host = opts.host ?? '127.0.0.1';
  const endpoint = `${scheme}://${host}:${clientPort}`;
  const peer = `http://127.0.0.1:${peerPort}`;
  const certs = opts.tls ? makeCerts(root, host) : null;
  const member = etcdMember({ name: 'test', root, netns: opts.netns, endpoint, peer, initialCluster: `test=${peer}`, certs });
  await member.start();
  const etcd: TestEtcd = {
    endpoint,
    dataDir: join(root, 'data-test'),
    stop: () => member.signal('SIGTERM'),
    kill: () => member.signal('SIGKILL'),
    start: () => member.start(),
    cleanup: async () => {
      await member.signal('SIGKILL');
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

export interface TestEtcdCluster {
  /** Client URL of each member, in member order. */
  endpoints: string[];
  /** SIGKILL member i; resolves when it is gone. */
  kill(i: number): Promise<void>;
  /** Start member i again with its data; resolves when it is healthy. */
  start(i: number): Promise<void>;
  /** Index of the current leader, asked from the running members. */
  leader(): number;
  cleanup(): Promise<void>;
}

/** A plain-http etcd cluster, member i in netns[i] listening on host[i] (ports 2379 and 2380). */
export async function startEtcdCluster(members: { netns: string; host: string }[]): Promise<TestEtcdCluster> {
  requireEtcd();
  const root = mkdtempSync(join(tmpdir(), 'flannel-ts-etcdc-'));
  dirs.add(root);
  const initialCluster = members.map((m, i) => `m${i}=http://${m.host}:2380`).join(',');
  const ms = members.map((m, i) =>
    etcdMember({ name: `m${i}`, root, netns: m.netns, endpoint: `http://${m.host}:2379`, peer: `http://${m.host}:2380`, initialCluster, certs: null }),
  );
  await Promise.all(ms.map((m) => m.start()));
  return {
    endpoints: ms.map((m) => m.endpoint),
    kill: (i) => ms[i]!.signal('SIGKILL'),
    start: (i) => ms[i]!.start(),
    leader: () => {
      for (const [i, m] of ms.entries()) {
        if (!m.running()) continue;
        const r = spawnSync('ip', ['netns', 'exec', members[i]!.netns, ETCDCTL_BIN, '--endpoints', m.endpoint, '--dial-timeout=1s', 'endpoint', 'status', '-w', 'json'], {
          encoding: 'utf8',
          env: { ...process.env, ETCDCTL_API: '3' },
          timeout: 3000,
        });
        if (r.status !== 0) continue;
        const st = (JSON.parse(r.stdout) as { Status: { header: { member_id: number }; leader: number } }[])[0]!.Status;
        if (st.leader === st.header.member_id) return i;
      }
      throw new Error('no running etcd member is the leader');
    },
    cleanup: async () => {
      await Promise.all(ms.map((m) => m.signal('SIGKILL')));
      rmSync(root, { recursive: true, force: true });
      dirs.delete(root);
    },
  };
}

/** The part of the KV contract a test reads and writes (as LocalStore offers it), over etcdctl in a namespace. */
export interface EtcdKeys {
  put(key: string, value: string): Promise<void>;
  delete(key: string): Promise<void>;
  list(prefix: string): Promise<{ entries: { key: string; value: string }[] }>;
}

/**
 * Keys of an etcd that listens inside network namespace `netns` (where
 * the test's daemons reach it), read and written with etcdctl run there.
 */
export function etcdKeysIn(netns: string, etcd: TestEtcd): EtcdKeys {
  const ctl = async (args: string[]) => {
    try {
      return (await execFileAsync('ip', ['netns', 'exec', netns, ETCDCTL_BIN, `--endpoints=${etcd.endpoint}`, ...args], { encoding: 'utf8', timeout: 20_000 })).stdout;
    } catch (err) {
      throw new Error(`etcdctl ${args.join(' ')} failed: ${(err as Error).message}`);
    }
  };
  const b64 = (s: string) => Buffer.from(s, 'base64').toString('utf8');
  return {
    put: async (key, value) => void (await ctl(['put', key, value])),
    delete: async (key) => void (await ctl(['del', key])),
    list: async (prefix) => {
      const out = JSON.parse(await ctl(['get', '--prefix', prefix, '-w', 'json'])) as { kvs?: { key: string; value: string }[] };
      return { entries: (out.kvs ?? []).map((kv) => ({ key: b64(kv.key), value: b64(kv.value) })) };
    },
  };
}
