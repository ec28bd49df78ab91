/**
 * flanneld's command line, compatible with flannel: the same flag names and
 * defaults, Go-flag syntax (-flag, --flag, --flag=value, --flag value), and
 * every flag also settable as FLANNELD_<NAME> (upper case, '-' -> '_'), with
 * the command line winning over the environment.
 */

import type { DaemonOptions } from '../daemon/options.js';

export type { DaemonOptions };

type Kind = 'string' | 'list' | 'int' | 'bool';
interface FlagSpec {
  name: string;
  key: keyof DaemonOptions;
  kind: Kind;
  def: string;
  usage: string;
}

export const FLAGS: FlagSpec[] = [
  { name: 'etcd-endpoints', key: 'etcdEndpoints', kind: 'string', def: 'http://127.0.0.1:4001,http://127.0.0.1:2379', usage: 'a comma-delimited list of etcd endpoints' },
  { name: 'etcd-prefix', key: 'etcdPrefix', kind: 'string', def: '/coreos.com/network', usage: 'etcd prefix' },
  { name: 'etcd-keyfile', key: 'etcdKeyfile', kind: 'string', def: '', usage: 'SSL key file used to secure etcd communication' },
  { name: 'etcd-certfile', key: 'etcdCertfile', kind: 'string', def: '', usage: 'SSL certification file used to secure etcd communication' },
  { name: 'etcd-cafile', key: 'etcdCafile', kind: 'string', def: '', usage: 'SSL Certificate Authority file used to secure etcd communication' },
  { name: 'etcd-username', key: 'etcdUsername', kind: 'string', def: '', usage: 'username for BasicAuth to etcd' },
  { name: 'etcd-password', key: 'etcdPassword', kind: 'string', def: '', usage: 'password for BasicAuth to etcd' },
  { name: 'local-store', key: 'localStore', kind: 'string', def: '', usage: 'use the embedded store in this directory instead of etcd (one machine, e.g. hosts in network namespaces)' },
  { name: 'iface', key: 'iface', kind: 'list', def: '', usage: 'interface (IP or name) for inter-host communication; repeatable, first match wins' },
  { name: 'iface-regex', key: 'ifaceRegex', kind: 'list', def: '', usage: 'regex matching the interface (IP or name) to use; repeatable, checked after --iface' },
  { name: 'iface-can-reach', key: 'ifaceCanReach', kind: 'string', def: '', usage: "use the interface of the route to this address ('ip route get')" },
  { name: 'subnet-file', key: 'subnetFile', kind: 'string', def: '/run/flannel/subnet.env', usage: 'filename where env variables (subnet, MTU, ...) will be written to' },
  { name: 'public-ip', key: 'publicIP', kind: 'string', def: '', usage: 'IP accessible by other nodes for inter-host communication' },
  { name: 'public-ipv6', key: 'publicIPv6', kind: 'string', def: '', usage: 'IPv6 accessible by other nodes for inter-host communication' },
  { name: 'subnet-lease-renew-margin', key: 'subnetLeaseRenewMargin', kind: 'int', def: '60', usage: 'subnet lease renewal margin, in minutes, ranging from 1 to 1439' },
  { name: 'ip-masq', key: 'ipMasq', kind: 'bool', def: 'false', usage: 'setup IP masquerade rule for traffic destined outside of overlay network' },
  { name: 'healthz-ip', key: 'healthzIP', kind: 'string', def: '0.0.0.0', usage: 'the IP address for healthz server to listen' },
  { name: 'healthz-port', key: 'healthzPort', kind: 'int', def: '0', usage: 'the port for healthz server to listen (0 to disable); also serves /metrics' },
  { name: 'iptables-resync', key: 'iptablesResync', kind: 'int', def: '5', usage: 'resync period for iptables rules, in seconds' },
  { name: 'iptables-forward-rules', key: 'iptablesForwardRules', kind: 'bool', def: 'true', usage: 'add default accept rules to FORWARD chain in iptables' },
  { name: 'log-level', key: 'logLevel', kind: 'string', def: 'info', usage: 'debug, info, warn or error' },
  { name: 'kube-subnet-mgr', key: 'kubeSubnetMgr', kind: 'bool', def: 'false', usage: 'contact the Kubernetes API for subnet assignment instead of etcd' },
  { name: 'kube-api-url', key: 'kubeApiUrl', kind: 'string', def: '', usage: 'Kubernetes API server URL. Does not need to be specified if flannel is running in a pod' },
  { name: 'kubeconfig-file', key: 'kubeconfigFile', kind: 'string', def: '', usage: 'kubeconfig file location. Does not need to be specified if flannel is running in a pod' },
  { name: 'kube-annotation-prefix', key: 'kubeAnnotationPrefix', kind: 'string', def: 'flannel.alpha.coreos.com', usage: 'Kubernetes annotation prefix. Can contain single slash "/", otherwise it will be appended at the end' },
  { name: 'net-config-path', key: 'netConfigPath', kind: 'string', def: '/etc/kube-flannel/net-conf.json', usage: 'path to the network configuration file (Kubernetes mode)' },
  { name: 'set-node-network-unavailable', key: 'setNodeNetworkUnavailable', kind: 'bool', def: 'true', usage: 'set NodeNetworkUnavailable to False on this node once ready (Kubernetes mode)' },
  { name: 'dry-run', key: 'dryRun', kind: 'bool', def: 'false', usage: "print the ip/bridge commands a kernel backend would run for the current leases, change nothing, exit (needs this host's lease in the store)" },
  { name: 'version', key: 'version', kind: 'bool', def: 'false', usage: 'print version and exit' },
  { name: 'help', key: 'help', kind: 'bool', def: 'false', usage: 'print this help and exit' },
];

/** Flags flannel has that we accept for drop-in compatibility but do not act on. */
const ACCEPTED_IGNORED = new Set(['v', 'logtostderr', 'alsologtostderr', 'stderrthreshold', 'log_dir', 'vmodule']);

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

function convert(spec: FlagSpec, raw: string, source: string): unknown {
  switch (spec.kind) {
    case 'string':
      return raw;
    case 'list':
      return [raw];
    case 'int': {
      if (!/^-?\d+$/.test(raw.trim())) throw new UsageError(`invalid value "${raw}" for ${source}: not an integer`);
      return Number(raw);
    }
    case 'bool': {
      const v = raw.trim().toLowerCase();
      if (['1', 't', 'true'].includes(v)) return true;
      if (['0', 'f', 'false'].includes(v)) return false;
      throw new UsageError(`invalid value "${raw}" for ${source}: not a boolean`);
    }
  }
}

export function parseOptions(argv: string[], env: NodeJS.ProcessEnv = process.env): DaemonOptions {
  const byName = new Map(FLAGS.map((f) => [f.name, f]));
  const fromArgs = new Map<keyof DaemonOptions, unknown>();
  const setArg = (spec: FlagSpec, v: unknown) => {
    if (spec.kind === 'list') fromArgs.set(spec.key, [...((fromArgs.get(spec.key) as string[]) ?? []), ...(v as string[])]);
    else fromArgs.set(spec.key, v);
  };

  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (!arg.startsWith('-') || arg === '-' || arg === '--') throw new UsageError(`unexpected argument "${arg}" (flanneld takes only flags)`);
    const body = arg.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const name = eq >= 0 ? body.slice(0, eq) : body;
    let value: string | undefined = eq >= 0 ? body.slice(eq + 1) : undefined;
    if (name === 'h') {
      fromArgs.set('help', true);
      continue;
    }
    if (ACCEPTED_IGNORED.has(name)) continue;
    const spec = byName.get(name);
    if (!spec) throw new UsageError(`unknown flag --${name} (see flanneld --help)`);
    if (value === undefined && spec.kind !== 'bool') {
      if (i + 1 >= argv.length) throw new UsageError(`flag --${name} needs a value`);
      value = argv[++i]!;
    }
    setArg(spec, convert(spec, value ?? 'true', `--${name}`));
  }

  const opts = {} as Record<keyof DaemonOptions, unknown>;
  for (const spec of FLAGS) {
    if (fromArgs.has(spec.key)) {
      opts[spec.key] = fromArgs.get(spec.key);
      continue;
    }
    const envName = `FLANNELD_${spec.name.toUpperCase().replace(/-/g, '_')}`;
    const envValue = env[envName];
    if (envValue !== undefined && envValue !== '') opts[spec.key] = convert(spec, envValue, envName);
    else opts[spec.key] = spec.kind === 'list' ? [] : convert(spec, spec.def, spec.name);
  }
  const out = opts as unknown as DaemonOptions;
  out.etcdEndpoints = String(opts.etcdEndpoints)
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (out.subnetLeaseRenewMargin < 1 || out.subnetLeaseRenewMargin > 1439) {
    throw new UsageError(`--subnet-lease-renew-margin must be between 1 and 1439 minutes, got ${out.subnetLeaseRenewMargin}`);
  }
  if (out.healthzPort < 0 || out.healthzPort > 65535) throw new UsageError(`--healthz-port must be 0..65535, got ${out.healthzPort}`);
  if (!['debug', 'info', 'warn', 'error'].includes(out.logLevel)) throw new UsageError(`--log-level must be debug, info, warn or error, got "${out.logLevel}"`);
  if (out.kubeSubnetMgr && out.localStore) throw new UsageError('--kube-subnet-mgr and --local-store name two subnet stores: pick one');
  for (const re of out.ifaceRegex) {
    try {
      new RegExp(re);
    } catch (err) {
      throw new UsageError(`invalid --iface-regex "${re}": ${(err as Error).message}`);
    }
  }
  return out;
}

export function usage(): string {
  const lines = ['Usage: flanneld [OPTION]...', ''];
  for (const f of FLAGS) {
    const head = f.kind === 'bool' ? `  --${f.name}` : `  --${f.name}=${f.kind === 'int' ? 'N' : 'VALUE'}`;
    const def = f.def && f.kind !== 'bool' ? ` (default ${JSON.stringify(f.def)})` : f.kind === 'bool' ? ` (default ${f.def})` : '';
    lines.push(`${head}\n        ${f.usage}${def}`);
  }
  lines.push('', 'Every flag can also be set as FLANNELD_<NAME>, e.g. FLANNELD_ETCD_ENDPOINTS; the command line wins.');
  return lines.join('\n');
}

/** FLANNEL_UDP_WORKERS: a whole number 1..8, or unset; anything else stops the daemon with the variable named. */
export function parseWorkersVariable(raw: string | undefined): number | undefined {
  if (raw === undefined || raw === '') return undefined;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1 || n > 8) throw new Error(`FLANNEL_UDP_WORKERS must be a whole number 1..8, got "${raw}"`);
  return n;
}
