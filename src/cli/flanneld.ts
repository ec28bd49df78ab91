/**
 * Entry point of bin/flanneld: parse flags, run the daemon, map failures to
 * one clear line and an exit code, stop cleanly on SIGTERM/SIGINT.
 */
import { readFileSync } from 'node:fs';
import { createLogger } from '../log.js';
import { parseOptions, parseWorkersVariable, usage, UsageError } from './options.js';
import { Daemon, FatalError, type DaemonSettings } from '../daemon/daemon.js';
import { ConfigError } from '../config/network.js';

const log = createLogger('flanneld');

function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

export async function main(argv: string[]): Promise<number> {
  let opts;
  try {
    opts = parseOptions(argv);
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`flanneld: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (opts.help) {
    process.stdout.write(usage() + '\n');
    return 0;
  }
  if (opts.version) {
    process.stdout.write(`flannel-ts ${version()}\n`);
    return 0;
  }

  let settings: DaemonSettings;
  try {
    settings = settingsFromEnv(process.env);
  } catch (err) {
    log.error('bad environment variable', { error: (err as Error).message });
    return 1;
  }
  const daemon = new Daemon(opts, settings);
  const stopped = new Promise<void>((resolve) => {
    const onSignal = (sig: string) => {
      log.info('received signal, shutting down', { signal: sig });
      void daemon.stop().finally(resolve);
    };
    process.once('SIGTERM', () => onSignal('SIGTERM'));
    process.once('SIGINT', () => onSignal('SIGINT'));
  });
  try {
    await daemon.start();
    if (opts.dryRun) {
      for (const line of daemon.plan) process.stdout.write(`${line}\n`);
      await daemon.stop();
      return 0;
    }
  } catch (err) {
    const e = err as Error;
    // Asked to stop while still starting (waiting for etcd or the config): a clean exit.
    if (daemon.isStopping) {
      await stopped;
      return 0;
    }
    if (e instanceof FatalError || e instanceof ConfigError) log.error(e.message);
    else log.error('failed to start', { error: e.message });
    await daemon.stop().catch(() => {});
    return 1;
  }
  const failed = daemon.whenFailed().then(async () => {
    await daemon.stop().catch(() => {});
    return 1;
  });
  return Promise.race([stopped.then(() => 0), failed]);
}

/**
 * The environment switches that are not flannel flags, read here once:
 * FLANNEL_UDP_OFFLOAD=0 forces the plain udp packet path, FLANNEL_UDP_GRO=0
 * turns receive coalescing off, FLANNEL_UDP_USO=0 UDP segmentation offload
 * (all three for comparisons), FLANNEL_UDP_WORKERS sets the worker pairs
 * when the backend config has no Workers, and tests shorten the 24 h lease
 * TTL with FLANNEL_TS_TEST_LEASE_TTL_SECONDS.
 */
export function settingsFromEnv(env: NodeJS.ProcessEnv): DaemonSettings {
  const ttl = Number(env.FLANNEL_TS_TEST_LEASE_TTL_SECONDS);
  const workers = parseWorkersVariable(env.FLANNEL_UDP_WORKERS);
  return {
    ...(Number.isFinite(ttl) && ttl > 0 ? { leaseTtlSeconds: ttl } : {}),
    dataplane: {
      offload: env.FLANNEL_UDP_OFFLOAD !== '0',
      rxCoalesce: env.FLANNEL_UDP_GRO !== '0',
      uso: env.FLANNEL_UDP_USO !== '0',
      replyFastPath: env.FLANNEL_UDP_REPLY_FAST !== '0',
      prime: env.FLANNEL_UDP_PRIME !== '0',
      nativeHop: env.FLANNEL_UDP_NATIVE_HOP !== '0',
      ...(workers !== undefined ? { workers } : {}),
    },
  };
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: Error) => {
    log.error('fatal', { error: err.stack ?? err.message });
    process.exit(1);
  },
);
