/**
 * Who does ESP on this host. flannel's way is the kernel's xfrm (charon
 * negotiates, the kernel encrypts); a kernel built without ESP (this
 * project's CI machines, some minimal cloud kernels) can negotiate but never
 * install an SA. There strongSwan's own userspace ESP (the kernel-libipsec
 * plugin, Debian's libcharon-extra-plugins) still carries traffic, so
 * FLANNEL_IPSEC_ESP=auto (the default) picks it when the kernel lacks ESP
 * and the plugin is installed.
 */
import { access } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { randomBytes } from 'node:crypto';
import type { Logger } from '../../log.js';
import type { IpRunner } from '../../net/iproute.js';
import { IpCommandError } from '../../net/iproute.js';
import type { EspMode } from './options.js';
import { BackendUnavailableError } from '../errors.js';

/**
 * Ask the kernel whether it can hold an ESP SA: add one (loopback, random
 * SPI, throw-away keys) and delete it again. The kernel's answer without
 * ESP support is "Requested type not found" (no esp4 transform).
 */
export async function kernelHasEsp(ip: IpRunner): Promise<boolean> {
  const spi = `0x${randomBytes(4).toString('hex')}`;
  const sa = ['src', '127.0.0.1', 'dst', '127.0.0.1', 'proto', 'esp', 'spi', spi];
  try {
    await ip.run(['xfrm', 'state', 'add', ...sa, 'mode', 'tunnel', 'enc', 'cbc(aes)', `0x${randomBytes(16).toString('hex')}`, 'auth-trunc', 'hmac(sha256)', `0x${randomBytes(32).toString('hex')}`, '128']);
  } catch (err) {
    if (err instanceof IpCommandError) return false;
    throw err;
  }
  await ip.runIgnoringMissing(['xfrm', 'state', 'delete', ...sa.slice(0, 4), 'proto', 'esp', 'spi', spi]);
  return true;
}

/** Where charon keeps its plugins: `<charon's directory>/plugins`, as Debian and the upstream layout have it. */
export function libipsecPlugin(charonPath: string): string {
  return join(dirname(charonPath), 'plugins', 'libstrongswan-kernel-libipsec.so');
}

export async function chooseEspMode(setting: EspMode | 'auto', charonPath: string, ip: IpRunner, log: Logger): Promise<EspMode> {
  const pluginThere = await access(libipsecPlugin(charonPath)).then(
    () => true,
    () => false,
  );
  if (setting === 'userspace') {
    if (!pluginThere) throw new BackendUnavailableError(`FLANNEL_IPSEC_ESP=userspace needs strongSwan's kernel-libipsec plugin (${libipsecPlugin(charonPath)}): install libcharon-extra-plugins`);
    return 'userspace';
  }
  if (setting === 'kernel') return 'kernel';
  if (await kernelHasEsp(ip)) return 'kernel';
  if (!pluginThere) {
    log.warn('the kernel has no ESP support and strongSwan has no userspace ESP here: IKE will connect but no SA can be installed', { hint: 'load esp4 (CONFIG_INET_ESP), or install libcharon-extra-plugins' });
    return 'kernel';
  }
  log.warn('the kernel has no ESP support: using strongSwan userspace ESP (kernel-libipsec)', { hint: 'FLANNEL_IPSEC_ESP=kernel forces the kernel path' });
  return 'userspace';
}
