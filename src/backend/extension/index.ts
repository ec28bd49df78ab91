/**
 * flannel's extension backend: the dataplane is whatever the network
 * config's commands do. PreStartupCommand's output is published as our
 * BackendData (a JSON string), PostStartupCommand runs once the lease is
 * held (NETWORK, SUBNET, PUBLIC_IP), and SubnetAddCommand /
 * SubnetRemoveCommand run for each other host's lease (SUBNET, PUBLIC_IP,
 * its BackendData on stdin), all through `sh -c`, as flannel runs them.
 *
 * The commands come from the shared network config: whoever can write it
 * runs commands as root on every host (as with flannel). What other hosts
 * write (their SUBNET, PUBLIC_IP) reaches the commands only in canonical
 * form (the lease codec), and their BackendData only on stdin, never in
 * the command line.
 *
 * Better than flannel: a failing add or remove is logged with its exit
 * code and stderr and retried at the next event (or within RETRY_MS),
 * instead of being forgotten; a hung command is killed after
 * FLANNEL_EXTENSION_COMMAND_TIMEOUT seconds (a host setting, default 30)
 * and reported, so one command cannot stall the daemon.
 */
import type { Backend, BackendContext } from '../types.js';
import type { Lease, LeaseEvent } from '../../subnet/types.js';
import { BackendOptionError, BackendUnavailableError } from '../errors.js';
import { formatIP4Net } from '../../net/ipaddr.js';
import { describe } from '../../subnet/manager.js';
import { describeFailure, runShell } from './shell-command.js';

const COMMANDS = ['PreStartupCommand', 'PostStartupCommand', 'SubnetAddCommand', 'SubnetRemoveCommand'] as const;
type CommandName = (typeof COMMANDS)[number];
const RETRY_MS = 10_000;

function commandTimeoutMs(env: NodeJS.ProcessEnv): number {
  const raw = env.FLANNEL_EXTENSION_COMMAND_TIMEOUT;
  if (raw === undefined || raw === '') return 30_000;
  const n = Number(raw);
  if (!Number.isFinite(n) || n <= 0 || n > 3600) throw new BackendUnavailableError(`FLANNEL_EXTENSION_COMMAND_TIMEOUT must be seconds between 0 and 3600, got "${raw}"`);
  return n * 1000;
}

export async function createExtensionBackend(ctx: BackendContext): Promise<Backend> {
  const cmds: Partial<Record<CommandName, string>> = {};
  for (const name of COMMANDS) {
    const v = ctx.backendConfig[name];
    if (v === undefined || v === null || v === '') continue;
    if (typeof v !== 'string') throw new BackendOptionError('extension', name, 'a shell command (a string)', v);
    cmds[name] = v;
  }
  const timeoutMs = commandTimeoutMs(process.env);
  const log = ctx.log;
  const counts = new Map<string, number>();
  const count = (command: CommandName, result: 'ok' | 'failed' | 'timeout') => {
    const k = `${command}|${result}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  };
  ctx.metrics.register('extension', () => {
    const lines = ['# HELP flannel_extension_commands_total Extension backend commands run, by command and result.', '# TYPE flannel_extension_commands_total counter'];
    for (const [k, n] of counts) {
      const [command, result] = k.split('|');
      lines.push(`flannel_extension_commands_total{command="${command}",result="${result}"} ${n}`);
    }
    return lines.join('\n') + '\n';
  });

  /** Run one command; true when it exited 0. */
  const run = async (name: CommandName, env: Record<string, string>, stdin: string, what: Record<string, unknown>): Promise<{ ok: boolean; stdout: string; why: string }> => {
    const r = await runShell(cmds[name]!, env, `${stdin}\n`, timeoutMs);
    const ok = !r.timedOut && !r.spawnError && r.code === 0;
    count(name, ok ? 'ok' : r.timedOut ? 'timeout' : 'failed');
    const why = ok ? '' : describeFailure(r, timeoutMs);
    if (ok) log.info(`ran ${name}`, { ...what, ...(r.stdout ? { output: r.stdout.slice(0, 200) } : {}) });
    return { ok, stdout: r.stdout, why };
  };

  /** Events whose command failed, by lease key: retried (the latest event of each lease) at the next batch. */
  const pending = new Map<string, LeaseEvent>();
  const skipped = new Set<string>();
  /** Leases whose SubnetAddCommand has not succeeded yet. */
  const neverAdded = new Set<string>();
  let retryTimer: NodeJS.Timeout | null = null;
  let chain: Promise<void> = Promise.resolve();
  let stopped = false;

  const apply = async (ev: LeaseEvent): Promise<void> => {
    const l = ev.lease;
    if (l.attrs.backendType !== 'extension') {
      if (!skipped.has(l.key)) log.warn('ignoring lease of another backend type', { subnet: describe(l), backendType: l.attrs.backendType ?? '(none)' });
      skipped.add(l.key);
      return;
    }
    skipped.delete(l.key);
    // A lease whose add never succeeded has nothing to remove.
    if (ev.type === 'removed' && neverAdded.delete(l.key)) return;
    const name: CommandName = ev.type === 'added' ? 'SubnetAddCommand' : 'SubnetRemoveCommand';
    if (!cmds[name]) return;
    const data = l.attrs.backendData;
    if (data !== undefined && typeof data !== 'string') {
      log.error(`not running ${name}: the lease's BackendData is not a JSON string`, { subnet: describe(l), publicIP: l.attrs.publicIP });
      return;
    }
    const env = { SUBNET: l.subnet ? formatIP4Net(l.subnet) : '', PUBLIC_IP: l.attrs.publicIP };
    const r = await run(name, env, data ?? '', { subnet: env.SUBNET, publicIP: env.PUBLIC_IP });
    if (ev.type === 'added') {
      if (r.ok) neverAdded.delete(l.key);
      else neverAdded.add(l.key);
    }
    if (r.ok) pending.delete(l.key);
    else {
      pending.set(l.key, ev);
      log.error(`${name} failed; retrying at the next event`, { subnet: env.SUBNET, publicIP: env.PUBLIC_IP, error: r.why });
    }
  };

  const handle = (events: LeaseEvent[]): Promise<void> => {
    chain = chain.then(async () => {
      if (stopped) return;
      // Earlier failures first, unless a newer event of the same lease replaces them.
      const retry = [...pending.values()].filter((p) => !events.some((e) => e.lease.key === p.lease.key));
      pending.clear();
      for (const ev of [...retry, ...events]) await apply(ev);
      if (retryTimer) clearTimeout(retryTimer);
      retryTimer = pending.size > 0 && !stopped ? setTimeout(() => void handle([]), RETRY_MS) : null;
      retryTimer?.unref();
    });
    return chain;
  };

  return {
    type: 'extension',
    async prepare() {
      if (!cmds.PreStartupCommand) {
        log.info('no PreStartupCommand configured');
        return { backendType: 'extension' };
      }
      const r = await run('PreStartupCommand', {}, '', {});
      if (!r.ok) throw new BackendUnavailableError(`extension backend: PreStartupCommand failed (${r.why})`);
      return { backendType: 'extension', backendData: r.stdout };
    },
    mtu: () => ctx.extIface.mtu,
    async start(own: Lease) {
      if (!cmds.PostStartupCommand) return;
      const env = {
        NETWORK: ctx.config.network ? formatIP4Net(ctx.config.network) : '',
        SUBNET: own.subnet ? formatIP4Net(own.subnet) : '',
        PUBLIC_IP: own.attrs.publicIP,
      };
      const r = await run('PostStartupCommand', env, '', { subnet: env.SUBNET });
      if (!r.ok) throw new BackendUnavailableError(`extension backend: PostStartupCommand failed (${r.why})`);
    },
    handleEvents: handle,
    async stop() {
      stopped = true;
      if (retryTimer) clearTimeout(retryTimer);
      await chain;
    },
  };
}
