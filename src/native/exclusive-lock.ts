/**
 * Exclusive holds on host state two flanneld processes must never share,
 * released by the kernel when the holder dies (SIGKILL included), so a
 * stale hold never blocks a restart:
 *
 * - a path (an ipsec run dir, a WireGuard key file or API socket): flock()
 *   on `<path>.lock`, opened without following symlinks. Paths are
 *   machine-wide (every network namespace shares /run);
 * - a network device name (flannel0, flannel-wg): an abstract Unix socket
 *   bound to a name of its own, which exists per network namespace as
 *   device names do. A second daemon would otherwise attach further queues
 *   to a multi-queue TUN device and take half of the first one's packets.
 *
 * A second daemon finds the hold taken and stops with one line naming the
 * setting that tells them apart, touching nothing.
 */
import { closeSync, constants, openSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { loadNative } from './addon.js';

export class LockHeldError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'LockHeldError';
  }
}

export interface Hold {
  release(): Promise<void>;
}

/** Hold `<path>.lock` (or `lockPath`); `what` and `setting` name the state and how to give another daemon its own. */
export function holdPath(path: string, what: string, setting: string, lockPath = `${path}.lock`): Hold {
  const fd = openSync(lockPath, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
  let locked = false;
  try {
    locked = loadNative().tryLockExclusive(fd);
  } finally {
    if (!locked) closeSync(fd);
  }
  if (!locked) throw new LockHeldError(`${what} ${path} is in use by another running flanneld (it holds ${lockPath}); give each daemon its own ${setting}`);
  let open = true;
  return {
    release: async () => {
      if (!open) return;
      open = false;
      closeSync(fd);
    },
  };
}

/** Hold a device name in this network namespace. */
export async function holdDevice(name: string, setting: string): Promise<Hold> {
  const server: Server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(err.code === 'EADDRINUSE' ? new LockHeldError(`device ${name} is in use by another running flanneld in this network namespace; give each daemon its own ${setting}`) : err),
    );
    server.listen(`\0flannel-ts/device/${name}`, () => resolve());
  });
  server.unref();
  return { release: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}
