/**
 * flannelctl: a tiny etcdctl-like tool, mainly so users of the embedded
 * local store (which has no etcdctl) can write the network config:
 *
 *   flannelctl [--local-store DIR | --etcd-endpoints URLS [--etcd-cafile F
 *              --etcd-certfile F --etcd-keyfile F --etcd-username U
 *              --etcd-password P]] put KEY VALUE | get KEY | get --prefix KEY | del KEY
 *
 * `get` prints the value; `get --prefix` prints key and value lines like
 * etcdctl. A missing key is an error (exit 1) so scripts can test for it.
 * Exit status: 0 ok, 1 error with one line on stderr.
 */
import type { KvStore } from '../subnet/kv.js';
import { openStore } from '../subnet/open-store.js';

export const DEFAULT_LOCAL_STORE = '/var/lib/flannel-ts/store';

const USAGE = `usage: flannelctl [--local-store DIR | --etcd-endpoints URLS [--etcd-cafile F --etcd-certfile F --etcd-keyfile F --etcd-username U --etcd-password P]] COMMAND
commands:
  put KEY VALUE       set KEY (no TTL)
  get KEY             print the value of KEY
  get --prefix KEY    print every key under KEY and its value
  del KEY             delete KEY
default store: --local-store ${DEFAULT_LOCAL_STORE}`;

class UsageError extends Error {}

interface Parsed {
  flags: Map<string, string | true>;
  args: string[];
}

const VALUE_FLAGS = new Set(['local-store', 'etcd-endpoints', 'etcd-cafile', 'etcd-certfile', 'etcd-keyfile', 'etcd-username', 'etcd-password']);
const BOOL_FLAGS = new Set(['prefix', 'help']);

function parse(argv: string[]): Parsed {
  const flags = new Map<string, string | true>();
  const args: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    // `--` ends the flags, for a value that itself starts with "--".
    if (a === '--') {
      args.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('--')) {
      args.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = eq >= 0 ? a.slice(2, eq) : a.slice(2);
    if (VALUE_FLAGS.has(name)) {
      const v = eq >= 0 ? a.slice(eq + 1) : argv[++i];
      if (v === undefined) throw new UsageError(`--${name} needs a value`);
      flags.set(name, v);
    } else if (BOOL_FLAGS.has(name) && eq < 0) {
      flags.set(name, true);
    } else {
      throw new UsageError(`unknown flag --${name}`);
    }
  }
  return { flags, args };
}

function storeFromFlags(flags: Map<string, string | true>): Promise<KvStore> {
  const str = (n: string) => {
    const v = flags.get(n);
    return typeof v === 'string' ? v : undefined;
  };
  const endpoints = str('etcd-endpoints');
  const local = str('local-store');
  if (endpoints && local) throw new UsageError('give either --local-store or --etcd-endpoints, not both');
  if (!endpoints) {
    for (const n of ['etcd-cafile', 'etcd-certfile', 'etcd-keyfile', 'etcd-username', 'etcd-password']) {
      if (flags.has(n)) throw new UsageError(`--${n} needs --etcd-endpoints`);
    }
  }
  return openStore({
    localStore: endpoints ? undefined : (local ?? DEFAULT_LOCAL_STORE),
    lockTimeoutMs: 5000,
    etcdEndpoints: (endpoints ?? '').split(',').map((e) => e.trim()).filter(Boolean),
    etcdCafile: str('etcd-cafile'),
    etcdCertfile: str('etcd-certfile'),
    etcdKeyfile: str('etcd-keyfile'),
    etcdUsername: str('etcd-username'),
    etcdPassword: str('etcd-password'),
  });
}

/** Runs one command; returns the exit status. Output goes to the given writers. */
export async function main(argv: string[], out: (s: string) => void = (s) => process.stdout.write(s), err: (s: string) => void = (s) => process.stderr.write(s)): Promise<number> {
  let store: KvStore | null = null;
  try {
    const { flags, args } = parse(argv);
    if (flags.has('help')) {
      out(USAGE + '\n');
      return 0;
    }
    const [cmd, ...rest] = args;
    const need = (n: number, form: string) => {
      if (rest.length !== n) throw new UsageError(`usage: flannelctl ${form}`);
    };
    if (cmd === undefined) throw new UsageError('missing command (put, get, del)');
    if (!['put', 'get', 'del'].includes(cmd)) throw new UsageError(`unknown command ${cmd}`);
    if (flags.has('prefix') && cmd !== 'get') throw new UsageError('--prefix only applies to get');
    if (cmd === 'put') need(2, 'put KEY VALUE');
    else need(1, `${cmd} KEY`);

    store = await storeFromFlags(flags);
    const key = rest[0]!;
    switch (cmd) {
      case 'put':
        await store.put(key, rest[1]!);
        out('OK\n');
        break;
      case 'get':
        if (flags.has('prefix')) {
          for (const e of (await store.list(key)).entries) out(`${e.key}\n${e.value}\n`);
        } else {
          const e = await store.get(key);
          if (!e) {
            err(`flannelctl: key not found: ${key}\n`);
            return 1;
          }
          out(`${e.value}\n`);
        }
        break;
      case 'del':
        await store.delete(key);
        out('OK\n');
        break;
    }
    return 0;
  } catch (e) {
    const msg = (e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, ' ');
    err(`flannelctl: ${msg}${e instanceof UsageError ? ' (see flannelctl --help)' : ''}\n`);
    return 1;
  } finally {
    if (store) await store.close().catch(() => undefined);
  }
}
