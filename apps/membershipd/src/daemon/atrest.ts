import { createHmac, randomBytes, scryptSync, timingSafeEqual } from 'node:crypto';
import { readdir, readFile, stat } from 'node:fs/promises';
import { inspect } from 'node:util';
import { z } from 'zod';
import { writeFileAtomic } from '@sealbus/crypto';

/** The environment variable an operator may give the at-rest key in. */
export const AT_REST_KEY_ENV = 'SEALBUS_AT_REST_KEY';

/**
 * The variable the nats-server child reads its JetStream key from. Only the
 * child's environment holds it (see NatsServerProcess: the child gets PATH and
 * what is passed explicitly), never the config file or argv.
 */
export const NATS_KEY_ENV = 'SEALBUS_JS_KEY';

/** scrypt cost of key check values (~50 ms, 16 MiB). */
const SCRYPT = { N: 2 ** 14, r: 8, p: 1, maxmem: 64 * 1024 * 1024 };

/** Shortest key text accepted: 16 characters is already weak; 32 random bytes in base64 is the advice. */
export const MIN_KEY_CHARS = 16;

/** Why an at-rest key, or the store it should open, was refused. */
export class AtRestError extends Error {
  override readonly name = 'AtRestError';
}

/**
 * The at-rest key, held so that it cannot be printed by accident: logging,
 * JSON and `util.inspect` show a placeholder. What leaves this object is
 * derived, never the key itself:
 * - `natsKey()`: HMAC-SHA-256(key, label) as 64 hex characters, the value the
 *   nats-server child gets, as `sbk` + 64 hex characters (a fixed-format
 *   token: the server's config parser re-reads environment values as config
 *   text, so raw base64 with `=` or `/`, or all digits, could parse
 *   differently than it was meant);
 * - `check(salt)`: a salted scrypt value stored beside the data so a wrong
 *   key is refused before nats-server ever opens the store.
 */
export class AtRestKey {
  readonly #secret: Buffer;
  readonly source: 'file' | 'env';

  private constructor(secret: Buffer, source: 'file' | 'env') {
    this.#secret = secret;
    this.source = source;
  }

  /** Parses key text: one line, a trailing newline ignored, not empty, not short. */
  static fromText(text: string, source: 'file' | 'env'): AtRestKey {
    return new AtRestKey(parseKeyLine(text, AT_REST_SOURCES, source), source);
  }

  natsKey(): string {
    return (
      'sbk' +
      createHmac('sha256', this.#secret).update('sealbus/nats-jetstream-key/v1').digest('hex')
    );
  }

  /**
   * The check value stored beside the data: scrypt over a per-store random
   * salt (slow on purpose, so a stolen store.json does not make a weak key
   * cheap to guess), 16 bytes in hex.
   */
  check(saltHex: string): string {
    return scryptSync(this.#secret, Buffer.from(saltHex, 'hex'), 16, SCRYPT).toString('hex');
  }

  /** The child environment that hands the key to nats-server. */
  childEnv(): Record<string, string> {
    return { [NATS_KEY_ENV]: this.natsKey() };
  }

  toJSON(): string {
    return '[at-rest key]';
  }

  toString(): string {
    return '[at-rest key]';
  }

  [inspect.custom](): string {
    return '[at-rest key]';
  }
}

/** Where a secret key may come from, for messages and lookups. */
export interface KeySources {
  /** What it is, for messages ("at-rest key"). */
  what: string;
  flag: string;
  env: string;
}

const AT_REST_SOURCES: KeySources = {
  what: 'at-rest key',
  flag: '--at-rest-key-file',
  env: AT_REST_KEY_ENV,
};

/**
 * Checks key text: one line (a trailing newline ignored), not empty, no
 * surrounding whitespace, at least MIN_KEY_CHARS characters. Returns its bytes.
 */
export function parseKeyLine(text: string, src: KeySources, source: 'file' | 'env'): Buffer {
  const where = `the ${src.what} (${source === 'file' ? src.flag : src.env})`;
  const line = text.replace(/\r?\n$/, '');
  if (line.length === 0) {
    throw new AtRestError(`${where} is empty; an empty key would leave the data unencrypted`);
  }
  if (/[\r\n]/.test(line)) throw new AtRestError(`${where} must be one line of text`);
  if (line.trim() !== line) throw new AtRestError(`${where} has leading or trailing whitespace`);
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(line))
    throw new AtRestError(`${where} contains control characters: write it as text (base64)`);
  if (line.length < MIN_KEY_CHARS) {
    throw new AtRestError(
      `${where} is too short: ${line.length} characters, at least ${MIN_KEY_CHARS}; ` +
        'use 32 random bytes in base64 (openssl rand -base64 32)'
    );
  }
  return Buffer.from(line, 'utf8');
}

/**
 * Reads key text from a file (a regular file, 0600 or stricter) or from the
 * environment; null when neither is given, an error when both are. The
 * environment variable is removed from this process once read, so no later
 * child inherits it.
 */
export async function readKeyText(
  file: string | undefined,
  src: KeySources,
  env: NodeJS.ProcessEnv = process.env
): Promise<{ text: string; source: 'file' | 'env' } | null> {
  const fromEnv = env[src.env];
  delete env[src.env];
  if (file !== undefined && fromEnv !== undefined) {
    throw new AtRestError(`give the ${src.what} by ${src.flag} or by ${src.env}, not both`);
  }
  if (file !== undefined) {
    let st;
    try {
      st = await stat(file);
    } catch (err) {
      throw new AtRestError(
        `cannot read the ${src.what} file ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`
      );
    }
    if (!st.isFile()) throw new AtRestError(`the ${src.what} file ${file} is not a regular file`);
    if ((st.mode & 0o077) !== 0) {
      throw new AtRestError(
        `the ${src.what} file ${file} is mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}: ` +
          `it must be 0600 or stricter (chmod 600 ${file})`
      );
    }
    let text: string;
    try {
      text = new TextDecoder('utf-8', { fatal: true }).decode(await readFile(file));
    } catch {
      throw new AtRestError(
        `the ${src.what} file ${file} is not text: write the key as text, e.g. head -c 32 /dev/urandom | base64`
      );
    }
    return { text, source: 'file' };
  }
  if (fromEnv !== undefined) return { text: fromEnv, source: 'env' };
  return null;
}

/** Loads the at-rest key from `--at-rest-key-file` or SEALBUS_AT_REST_KEY; null when neither is given. */
export async function loadAtRestKey(
  file: string | undefined,
  env: NodeJS.ProcessEnv = process.env
): Promise<AtRestKey | null> {
  const got = await readKeyText(file, AT_REST_SOURCES, env);
  return got ? AtRestKey.fromText(got.text, got.source) : null;
}

const markerSchema = z.object({
  format: z.literal(1),
  created_at: z.string(),
  /** False until every bucket exists: a first start cut short may create them still. */
  initialized: z.boolean(),
  at_rest: z.boolean(),
  key_salt: z
    .string()
    .regex(/^[0-9a-f]{32}$/)
    .nullable(),
  key_check: z
    .string()
    .regex(/^[0-9a-f]{32}$/)
    .nullable(),
});

/**
 * `DATA/nats/store.json`: written before nats-server first opens a new
 * store (so the key it is encrypted with is known from the first byte on)
 * and marked initialised once every bucket exists; from then on a start
 * opens the buckets bind-only.
 */
export type StoreMarker = z.infer<typeof markerSchema>;

export async function readStoreMarker(path: string): Promise<StoreMarker | null> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    return markerSchema.parse(JSON.parse(text));
  } catch {
    throw new AtRestError(
      `${path} is not a valid store marker; restore it from a backup of the data dir or remove it only if the store is known to be unencrypted`
    );
  }
}

export async function writeStoreMarker(
  path: string,
  key: AtRestKey | null,
  initialized: boolean
): Promise<StoreMarker> {
  const salt = key ? randomBytes(16).toString('hex') : null;
  const marker: StoreMarker = {
    format: 1,
    created_at: new Date().toISOString(),
    initialized,
    at_rest: key !== null,
    key_salt: salt,
    key_check: key && salt ? key.check(salt) : null,
  };
  await writeFileAtomic(path, JSON.stringify(marker, null, 2) + '\n', { mode: 0o600 });
  return marker;
}

/** Records that every bucket of the store exists (from now on: bind-only). */
export async function markInitialized(path: string, marker: StoreMarker): Promise<StoreMarker> {
  const done = { ...marker, initialized: true };
  await writeFileAtomic(path, JSON.stringify(done, null, 2) + '\n', { mode: 0o600 });
  return done;
}

/** True when some stream under `dir` has an encrypted key file (nats-server writes `meta.key`). */
export async function hasEncryptedStreams(dir: string): Promise<boolean> {
  try {
    const entries = await readdir(dir, { recursive: true, withFileTypes: true });
    return entries.some((e) => e.isFile() && e.name === 'meta.key');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** True when `dir` exists and has at least one entry. */
export async function hasEntries(dir: string): Promise<boolean> {
  try {
    return (await readdir(dir)).length > 0;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** What the store on disk is, and how it must be opened. */
export interface StoreState {
  /** The store has been initialised before (marker, or encrypted data): its buckets must exist. */
  initialized: boolean;
  /** The marker, when one was found (a store from before markers has none). */
  marker: StoreMarker | null;
}

/**
 * Checks the at-rest key against the store on disk before anything opens it:
 * - an encrypted store needs its key, and exactly that key;
 * - a plaintext store is not switched to encryption in place (nats-server
 *   would only encrypt new blocks and leave the rest readable): back up and
 *   restore into a fresh data dir with the key instead.
 */
export async function checkStore(
  markerPath: string,
  jetstreamDir: string,
  key: AtRestKey | null
): Promise<StoreState> {
  const marker = await readStoreMarker(markerPath);
  const hasData = await hasEntries(jetstreamDir);
  // The marker says so, or (marker lost) nats-server's own key files do.
  const onDisk = await hasEncryptedStreams(jetstreamDir);
  const encrypted = (marker?.at_rest ?? false) || onDisk;
  if (marker || hasData) {
    if (encrypted && !key) {
      throw new AtRestError(
        `the store in ${jetstreamDir} is encrypted at rest: give its key with --at-rest-key-file or ${AT_REST_KEY_ENV}`
      );
    }
    if (!encrypted && key) {
      throw new AtRestError(
        `the store in ${jetstreamDir} is not encrypted at rest and cannot be switched in place: ` +
          'back it up, restore into a fresh data dir with the key, and serve that (docs/RUNBOOK.md, "Enabling at-rest encryption")'
      );
    }
    if (
      encrypted &&
      key &&
      marker?.key_check &&
      marker.key_salt &&
      !sameHex(marker.key_check, key.check(marker.key_salt))
    ) {
      throw new AtRestError(
        `wrong at-rest key: it is not the key the store in ${jetstreamDir} was written with (nothing was opened or changed)`
      );
    }
  }
  // Initialised: the marker says so (every bucket existed once), or, the
  // marker lost, encrypted streams are on disk. A plaintext store from before
  // markers has none and is opened create-if-missing as before: no key is
  // involved, so nothing can hide its buckets.
  return { initialized: marker ? marker.initialized : onDisk, marker };
}

function sameHex(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && timingSafeEqual(x, y);
}
