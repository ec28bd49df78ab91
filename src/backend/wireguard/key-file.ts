/**
 * The host's WireGuard private key, kept where flannel keeps it
 * (/run/flannel/wgkey, or WIREGUARD_KEY_FILE) in wg's base64 text form:
 * read when present, else created (mode 0600, written to a temporary file
 * and renamed, so a crash never leaves half a key). A key file that does
 * not hold a key is an error naming the file, never its content.
 */
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { generateKeyPair } from '../../wireguard/primitives.js';
import { BackendUnavailableError } from '../errors.js';
import { parseKey } from './options.js';

/**
 * The key as loadOrCreatePrivateKey would use it; with `dryRun`, a missing
 * file is not created: a throw-away key stands in (created: true says so).
 */
export async function loadOrCreatePrivateKey(path: string, dryRun = false): Promise<{ key: Buffer; created: boolean }> {
  let text: string | null = null;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new BackendUnavailableError(`wireguard backend: cannot read the key file ${path}: ${(err as Error).message}`);
  }
  if (text !== null) {
    const key = parseKey(text);
    if (!key) throw new BackendUnavailableError(`wireguard backend: ${path} does not hold a WireGuard private key (32 bytes, base64); delete it to have a new key made`);
    return { key, created: false };
  }
  const key = generateKeyPair().privateKey;
  if (dryRun) return { key, created: true };
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  const tmp = `${path}.${process.pid}.tmp`;
  await writeFile(tmp, key.toString('base64') + '\n', { mode: 0o600 });
  await rename(tmp, path);
  return { key, created: true };
}
