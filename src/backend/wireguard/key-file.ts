/**
 * The host's WireGuard private key, kept where flannel keeps it
 * (/run/flannel/wgkey, or WIREGUARD_KEY_FILE) in wg's base64 text form:
 * read when present, else created. A key file that does not hold a key is
 * an error naming the file, never its content.
 *
 * The path is predictable, in a directory others may write to, so neither
 * side follows a symlink: it is read with O_NOFOLLOW, and must be a regular
 * file owned by us that nobody else may write (one planted by another user
 * would be a key they know); one others may read is made 0600, with a
 * warning. A new key goes to a temporary file created exclusively
 * (O_EXCL|O_NOFOLLOW, mode 0600), then is renamed over the name, so a crash
 * never leaves half a key and nothing prepared in advance is written
 * through.
 */
import { constants, type FileHandle, open } from 'node:fs/promises';
import { mkdir, rename, rm } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import { generateKeyPair } from '../../wireguard/primitives.js';
import { BackendUnavailableError } from '../errors.js';
import { parseKey } from './options.js';

/** Who may not hold our key file: a uid other than ours. */
const ourUid = () => (typeof process.geteuid === 'function' ? process.geteuid() : 0);

async function readKeyFile(path: string, warn: (msg: string) => void): Promise<string | null> {
  let fh: FileHandle;
  try {
    fh = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return null;
    if (code === 'ELOOP') throw new BackendUnavailableError(`wireguard backend: the key file ${path} is a symlink; refusing to follow it`);
    throw new BackendUnavailableError(`wireguard backend: cannot read the key file ${path}: ${(err as Error).message}`);
  }
  try {
    const st = await fh.stat();
    if (!st.isFile()) throw new BackendUnavailableError(`wireguard backend: the key file ${path} is not a regular file`);
    if (st.uid !== ourUid()) throw new BackendUnavailableError(`wireguard backend: the key file ${path} belongs to uid ${st.uid}, not to us (${ourUid()}); refusing a key someone else may know`);
    if (st.mode & 0o022) throw new BackendUnavailableError(`wireguard backend: the key file ${path} is writable by others (mode ${(st.mode & 0o777).toString(8)}); refusing it`);
    if (st.mode & 0o044) {
      await fh.chmod(0o600);
      warn(`the key file ${path} was readable by others (mode ${(st.mode & 0o777).toString(8)}); made it 0600`);
    }
    return await fh.readFile('utf8');
  } finally {
    await fh.close();
  }
}

/**
 * The key as loadOrCreatePrivateKey would use it; with `dryRun`, a missing
 * file is not created: a throw-away key stands in (created: true says so).
 */
export async function loadOrCreatePrivateKey(path: string, dryRun = false, warn: (msg: string) => void = () => {}): Promise<{ key: Buffer; created: boolean }> {
  const text = await readKeyFile(path, warn);
  if (text !== null) {
    const key = parseKey(text.trim());
    if (!key) throw new BackendUnavailableError(`wireguard backend: ${path} does not hold a WireGuard private key (32 bytes, base64); delete it to have a new key made`);
    return { key, created: false };
  }
  const key = generateKeyPair().privateKey;
  if (dryRun) return { key, created: true };
  await mkdir(dirname(path), { recursive: true, mode: 0o755 });
  await writeExclusive(path, key.toString('base64') + '\n');
  return { key, created: true };
}

/**
 * Write `text` to `path` (mode 0600) through a fresh temporary name created
 * with O_EXCL|O_NOFOLLOW, then rename: never through a symlink or a file
 * someone prepared.
 */
async function writeExclusive(path: string, text: string): Promise<void> {
  const tmp = `${path}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`;
  const fh = await open(tmp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await rm(tmp, { force: true });
    throw err;
  } finally {
    await fh.close().catch(() => {});
  }
  await rename(tmp, path);
}
