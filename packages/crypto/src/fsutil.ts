import { randomBytes } from 'node:crypto';
import { link, open, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';

export interface WriteAtomicOptions {
  /** File mode, applied before any byte is written (default 0600). */
  mode?: number;
  /** Fail with EEXIST instead of replacing an existing file. */
  createOnly?: boolean;
}

/**
 * Writes a file so that readers see either the old content or the whole new
 * content, never a torn file: temp file in the same directory (created with
 * the final mode, so a secret is never briefly world-readable), fsync, rename
 * (or hard-link for create-only), fsync of the directory.
 */
export async function writeFileAtomic(
  path: string,
  data: string | Uint8Array,
  options: WriteAtomicOptions = {}
): Promise<void> {
  const mode = options.mode ?? 0o600;
  const dir = dirname(path);
  const tmp = join(dir, `.${basename(path)}.${randomBytes(6).toString('hex')}.tmp`);
  const fh = await open(tmp, 'wx', mode);
  try {
    await fh.chmod(mode); // the umask may have narrowed or the caller widened it
    await fh.writeFile(data);
    await fh.sync();
  } catch (err) {
    await fh.close();
    await rm(tmp, { force: true });
    throw err;
  }
  await fh.close();
  try {
    if (options.createOnly) {
      await link(tmp, path);
      await rm(tmp, { force: true });
    } else {
      await rename(tmp, path);
    }
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  const dh = await open(dir, 'r');
  try {
    await dh.sync();
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic.
  } finally {
    await dh.close();
  }
}
