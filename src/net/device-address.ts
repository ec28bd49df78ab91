/**
 * A device holds exactly one address of ours: the one wanted is added if
 * missing, every other that `isOurs` claims (an address from an earlier
 * lease) is removed, and nothing is done when it is already right, so a
 * restart causes no flap. Used by the udp and vxlan backends for their
 * device's /32, and by wireguard's kernel path for its /32 and /128 (an
 * IPv6 device's link-local address is the kernel's, never touched).
 */
import type { Logger } from '../log.js';
import type { IpRunner } from './iproute.js';

export async function ensureOnlyAddress(
  read: IpRunner,
  write: IpRunner,
  dev: string,
  want: string,
  isOurs: (cidr: string) => boolean,
  log: Logger,
  family: 4 | 6 = 4,
): Promise<void> {
  const shown = await read.runIgnoringMissing([family === 4 ? '-4' : '-6', '-o', 'addr', 'show', 'dev', dev]);
  let present = false;
  const listed = family === 4 ? /\binet\s+(\d+\.\d+\.\d+\.\d+\/\d+)/g : /\binet6\s+([0-9a-f:]+\/\d+)\s+scope\s+global/g;
  for (const m of shown.matchAll(listed)) {
    if (m[1] === want) present = true;
    else if (isOurs(m[1]!)) {
      log.info('removing stale address from device', { device: dev, address: m[1] });
      await write.runIgnoringMissing(['addr', 'del', m[1]!, 'dev', dev]);
    }
  }
  if (!present) await write.run([...(family === 6 ? ['-6'] : []), 'addr', 'add', want, 'dev', dev]);
}
