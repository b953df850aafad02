import { readFile, stat } from 'node:fs/promises';
import { fromHex, toHex } from './bytes.js';
import { ed25519GenerateSeed, ed25519PublicFromSeed } from './ed25519.js';
import { CryptoError } from './errors.js';
import { writeFileAtomic } from './fsutil.js';
import { natsUserSeed } from './natsuser.js';
import type { Identity, IdentityFile } from './types.js';
import { x25519GeneratePrivate, x25519PublicFromPrivate } from './x25519.js';

/** Builds an identity from its two private halves, deriving the public keys (NATS key included). */
export function identityFromSecrets(signSeed: Uint8Array, kexPriv: Uint8Array): Identity {
  const signPub = ed25519PublicFromSeed(signSeed);
  const kexPub = x25519PublicFromPrivate(kexPriv);
  const natsPub = ed25519PublicFromSeed(natsUserSeed(signSeed));
  return Object.freeze({
    signPub,
    signSeed,
    kexPub,
    kexPriv,
    signPubHex: toHex(signPub),
    kexPubHex: toHex(kexPub),
    natsPub,
    natsPubHex: toHex(natsPub),
  });
}

export function generateIdentity(): Identity {
  return identityFromSecrets(ed25519GenerateSeed(), x25519GeneratePrivate());
}

export function identityToFile(id: Identity): IdentityFile {
  return {
    version: 1,
    sign_pub: id.signPubHex,
    sign_priv: toHex(id.signSeed),
    kex_pub: id.kexPubHex,
    kex_priv: toHex(id.kexPriv),
  };
}

const corrupt = (path: string, why: string) =>
  new CryptoError('IDENTITY_CORRUPT', `identity file ${path}: ${why}`);

/**
 * Parses identity file content. The stored public keys must match the ones
 * derived from the private halves: a file that disagrees with itself is
 * corrupt, never "repaired".
 */
export function identityFromFileContent(text: string, path = '<identity>'): Identity {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    // The parser's message quotes file content, which holds private keys.
    throw corrupt(path, 'not valid JSON');
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) {
    throw corrupt(path, 'not a JSON object');
  }
  const f = raw as Record<string, unknown>;
  if (f.version !== 1) throw corrupt(path, 'unsupported or missing "version" (expected 1)');
  const field = (name: keyof IdentityFile): Uint8Array => {
    const v = f[name];
    if (typeof v !== 'string') throw corrupt(path, `missing "${name}"`);
    try {
      return fromHex(v, name, 32);
    } catch {
      throw corrupt(path, `"${name}" must be 64 hex characters`);
    }
  };
  const signPub = field('sign_pub');
  const kexPub = field('kex_pub');
  const id = identityFromSecrets(field('sign_priv'), field('kex_priv'));
  if (toHex(signPub) !== id.signPubHex)
    throw corrupt(path, '"sign_pub" does not match "sign_priv"');
  if (toHex(kexPub) !== id.kexPubHex) throw corrupt(path, '"kex_pub" does not match "kex_priv"');
  return id;
}

export function serializeIdentity(id: Identity): string {
  return JSON.stringify(identityToFile(id)) + '\n';
}

/**
 * Writes an identity file atomically with mode 0600. With `createOnly`, an
 * existing file is never replaced (the error has code EEXIST).
 */
export async function saveIdentity(
  path: string,
  id: Identity,
  options: { createOnly?: boolean } = {}
): Promise<void> {
  await writeFileAtomic(path, serializeIdentity(id), { mode: 0o600, ...options });
}

/**
 * Loads an identity file. Missing → `IDENTITY_NOT_FOUND`; readable by group
 * or others → `IDENTITY_PERMISSIONS` (like ssh, a leaked key is refused, not
 * used); unparsable or inconsistent → `IDENTITY_CORRUPT`. Never creates.
 */
export async function loadIdentity(path: string): Promise<Identity> {
  let mode: number;
  let text: string;
  try {
    mode = (await stat(path)).mode;
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') {
      throw new CryptoError('IDENTITY_NOT_FOUND', `identity file ${path} does not exist`);
    }
    throw new CryptoError('IDENTITY_IO', `identity file ${path}: cannot read (${code ?? 'error'})`);
  }
  if ((mode & 0o077) !== 0) {
    throw new CryptoError(
      'IDENTITY_PERMISSIONS',
      `identity file ${path} is accessible by group or others (mode ${(mode & 0o777).toString(8)}); run: chmod 600 ${path}`
    );
  }
  return identityFromFileContent(text, path);
}

/**
 * Loads the identity at `path`, creating it (0600) only if the file does not
 * exist. A corrupt or unreadable file is an error, never regenerated. Safe
 * against a concurrent creator: the loser loads the winner's file.
 */
export async function loadOrCreateIdentity(
  path: string
): Promise<{ identity: Identity; created: boolean }> {
  try {
    return { identity: await loadIdentity(path), created: false };
  } catch (err) {
    if (!(err instanceof CryptoError) || err.code !== 'IDENTITY_NOT_FOUND') throw err;
  }
  const identity = generateIdentity();
  try {
    await saveIdentity(path, identity, { createOnly: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') {
      return { identity: await loadIdentity(path), created: false };
    }
    throw new CryptoError(
      'IDENTITY_IO',
      `identity file ${path}: cannot create (${(err as NodeJS.ErrnoException).code ?? 'error'})`
    );
  }
  return { identity, created: true };
}
