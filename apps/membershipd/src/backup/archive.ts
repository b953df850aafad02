import { createCipheriv, createDecipheriv, createHash, randomBytes, scryptSync } from 'node:crypto';
import { inspect as utilInspect } from 'node:util';
import { readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, basename, join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import * as tar from 'tar-stream';
import { z } from 'zod';
import { parseKeyLine, readKeyText, type KeySources } from '../daemon/atrest.js';

/**
 * A Sealbus backup is a gzip'd tar (`tar tzf` lists it) of:
 * - `manifest.json`: format, version, time, source, and one section per
 *   bucket and stream with its record count and the SHA-256 of its file;
 * - `kv/<bucket>.jsonl`: one `{"key","value"}` line per live key, value in
 *   base64 (the stored bytes, unchanged), sorted by key;
 * - `stream/<stream>.jsonl`: one `{"subject","data"}` line per message
 *   (plus `headers` when it has any), oldest first: the audit log and the
 *   stream of every persisted room (sealed frames, ciphertext).
 * - `blobs/sealbus_blobs_<room>.jsonl`: one `{"hash","size","data"}` line per
 *   blob of the room (ciphertext, base64), sorted by hash, unless the backup
 *   left blobs out (`--no-blobs`; the manifest's `blobs` says which).
 * Records carry no revision, sequence or store time, so a backup of a
 * restored store has the same checksums as the backup it was restored from:
 * that equality is the proof a round trip changed nothing.
 */
export const ARCHIVE_FORMAT = 'sealbus-backup';
export const ARCHIVE_FORMAT_VERSION = 1;

/** Largest archive `readArchive` accepts: the control plane is small; this bounds memory. */
export const MAX_ARCHIVE_BYTES = 1024 * 1024 * 1024;

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/);

export const sectionSchema = z.object({
  name: z.string().regex(/^[A-Za-z0-9_-]+$/),
  kind: z.enum(['kv', 'stream', 'blobs']),
  file: z.string().regex(/^(kv|stream|blobs)\/[A-Za-z0-9_-]+\.jsonl$/),
  count: z.number().int().nonnegative(),
  bytes: z.number().int().nonnegative(),
  sha256: sha256Hex,
});

export const manifestSchema = z.object({
  format: z.literal(ARCHIVE_FORMAT),
  format_version: z.literal(ARCHIVE_FORMAT_VERSION),
  sealbus_version: z.string(),
  created_at: z.string(),
  source: z.object({
    mode: z.enum(['live', 'offline']),
    data_dir: z.string().nullable(),
    nats_server: z.string().nullable(),
    at_rest: z.boolean().nullable(),
  }),
  sections: z.array(sectionSchema),
  /** Whether room blobs are in the archive (absent: made before blobs existed). */
  blobs: z.enum(['included', 'omitted']).optional(),
  totals: z.object({ records: z.number().int().nonnegative(), bytes: z.number().int() }),
});

export type Section = z.infer<typeof sectionSchema>;
export type Manifest = z.infer<typeof manifestSchema>;

export const kvRecordSchema = z.object({ key: z.string().min(1), value: z.string() });
export const streamRecordSchema = z.object({
  subject: z.string().min(1),
  data: z.string(),
  /** Message headers (a persisted room's frames carry their message id), in order. */
  headers: z.array(z.tuple([z.string(), z.string()])).optional(),
  /** The message's stream sequence (archives since 0.2): a restore reproduces it, and checks it. */
  seq: z.number().int().positive().optional(),
  /** When the stream stored it (ISO 8601, archives since 0.2): kept for the record, a restore cannot set it. */
  time: z.string().datetime({ offset: true }).optional(),
});
/** One blob of a room: its bytes (ciphertext, base64), named by their SHA-256. */
export const blobRecordSchema = z.object({
  hash: sha256Hex,
  size: z.number().int().nonnegative(),
  data: z.string(),
});
export type KvRecord = z.infer<typeof kvRecordSchema>;
export type StreamRecord = z.infer<typeof streamRecordSchema>;
export type BlobRecord = z.infer<typeof blobRecordSchema>;
export type AnyRecord = KvRecord | StreamRecord | BlobRecord;
export type SectionKind = Section['kind'];

/** One section's content, before it is written. */
export interface SectionData {
  name: string;
  kind: SectionKind;
  records: AnyRecord[];
}

/** Why a blob record is not the blob it names (undefined when it is). */
export function blobRecordDefect(r: BlobRecord): string | undefined {
  const bytes = Buffer.from(r.data, 'base64');
  if (bytes.toString('base64') !== r.data) return `blob ${r.hash}: data is not canonical base64`;
  if (bytes.length !== r.size)
    return `blob ${r.hash}: ${bytes.length} bytes, the record says ${r.size}`;
  if (sha256(bytes) !== r.hash) return `blob ${r.hash}: its bytes hash to ${sha256(bytes)}`;
  return undefined;
}

/** Why an archive was refused. Nothing has been written when this is thrown. */
export class ArchiveError extends Error {
  override readonly name = 'ArchiveError';
}

export function sha256(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The JSONL bytes of a section and its manifest entry. */
export function encodeSection(s: SectionData): { section: Section; body: Buffer } {
  // Line by line: one string of every blob's base64 could pass V8's limit.
  const body = Buffer.concat(s.records.map((r) => Buffer.from(JSON.stringify(r) + '\n', 'utf8')));
  return {
    section: {
      name: s.name,
      kind: s.kind,
      file: `${s.kind}/${s.name}.jsonl`,
      count: s.records.length,
      bytes: body.length,
      sha256: sha256(body),
    },
    body,
  };
}

/** Builds the archive bytes: manifest first, then every section file. */
export async function buildArchive(
  header: Omit<Manifest, 'sections' | 'totals' | 'format' | 'format_version'>,
  sections: SectionData[],
  /** The largest archive to write: what readArchive reads (a parameter for tests). */
  maxBytes = MAX_ARCHIVE_BYTES
): Promise<{ manifest: Manifest; bytes: Buffer }> {
  const encoded = sections.map(encodeSection);
  const manifest: Manifest = {
    format: ARCHIVE_FORMAT,
    format_version: ARCHIVE_FORMAT_VERSION,
    ...header,
    sections: encoded.map((e) => e.section),
    totals: {
      records: encoded.reduce((n, e) => n + e.section.count, 0),
      bytes: encoded.reduce((n, e) => n + e.section.bytes, 0),
    },
  };
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const collected = (async () => {
    for await (const c of pack as unknown as AsyncIterable<Buffer>) chunks.push(c);
  })();
  const mtime = new Date(manifest.created_at);
  const add = (name: string, body: Buffer) =>
    new Promise<void>((resolve, reject) =>
      pack.entry({ name, size: body.length, mode: 0o600, mtime }, body, (err) =>
        err ? reject(err) : resolve()
      )
    );
  await add('manifest.json', Buffer.from(JSON.stringify(manifest, null, 2) + '\n'));
  for (const e of encoded) await add(e.section.file, e.body);
  pack.finalize();
  await collected;
  const tarBytes = Buffer.concat(chunks);
  // What readArchive would refuse is never written.
  if (tarBytes.length > maxBytes)
    throw new ArchiveError(
      `the archive would hold ${humanBytes(tarBytes.length)}, more than the ${humanBytes(maxBytes)} a restore reads` +
        (manifest.blobs === 'included' ? ' (leave room blobs out with --no-blobs)' : '')
    );
  return { manifest, bytes: gzipSync(tarBytes) };
}

/** Writes `bytes` to `path` (0600) through a temporary file and a rename: never half a backup. */
export async function writeArchiveFile(path: string, bytes: Buffer): Promise<void> {
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.tmp`);
  try {
    await writeFile(tmp, bytes, { mode: 0o600, flag: 'wx' });
    await rename(tmp, path);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

/** The environment variable an archive key may be given in. */
export const ARCHIVE_KEY_ENV = 'SEALBUS_BACKUP_KEY';

const ARCHIVE_KEY_SOURCES: KeySources = {
  what: 'archive key',
  flag: '--archive-key-file',
  env: ARCHIVE_KEY_ENV,
};

/**
 * An encrypted archive: this line, a 16-byte salt, a 12-byte nonce, the
 * gzip'd tar under ChaCha20-Poly1305, its 16-byte tag. The key is
 * scrypt(archive key, salt, N=2^15, r=8, p=1); magic, salt and nonce are
 * authenticated.
 */
const ENC_MAGIC = Buffer.from('SEALBUS-BACKUP-ENCRYPTED-1\n', 'ascii');

/** The key that encrypts backup archives (one line of text, like the at-rest key). */
export class ArchiveKey {
  readonly #secret: Buffer;

  private constructor(secret: Buffer) {
    this.#secret = secret;
  }

  /** From `--archive-key-file` (0600) or SEALBUS_BACKUP_KEY; null when neither is given. */
  static async load(file: string | undefined): Promise<ArchiveKey | null> {
    const got = await readKeyText(file, ARCHIVE_KEY_SOURCES);
    return got ? new ArchiveKey(parseKeyLine(got.text, ARCHIVE_KEY_SOURCES, got.source)) : null;
  }

  /** scrypt (slow on purpose: a leaked archive must not make a weak key cheap to guess). */
  derive(salt: Buffer): Buffer {
    return scryptSync(this.#secret, salt, 32, {
      N: 2 ** 15,
      r: 8,
      p: 1,
      maxmem: 64 * 1024 * 1024,
    });
  }

  toJSON(): string {
    return '[archive key]';
  }

  [utilInspect.custom](): string {
    return '[archive key]';
  }
}

export function isEncryptedArchive(bytes: Buffer): boolean {
  return bytes.subarray(0, ENC_MAGIC.length).equals(ENC_MAGIC);
}

/** Encrypts archive bytes (the gzip'd tar). */
export function sealArchive(gz: Buffer, key: ArchiveKey): Buffer {
  const salt = randomBytes(16);
  const nonce = randomBytes(12);
  const cipher = createCipheriv('chacha20-poly1305', key.derive(salt), nonce, {
    authTagLength: 16,
  });
  const head = Buffer.concat([ENC_MAGIC, salt, nonce]);
  cipher.setAAD(head, { plaintextLength: gz.length });
  const body = Buffer.concat([cipher.update(gz), cipher.final()]);
  return Buffer.concat([head, body, cipher.getAuthTag()]);
}

/** Decrypts an encrypted archive; a wrong key or any altered byte is an ArchiveError. */
export function openSealedArchive(bytes: Buffer, key: ArchiveKey | null, path: string): Buffer {
  if (!key) {
    throw new ArchiveError(
      `${path} is encrypted: give its key with --archive-key-file or ${ARCHIVE_KEY_ENV}`
    );
  }
  const at = ENC_MAGIC.length;
  if (bytes.length < at + 16 + 12 + 16) throw new ArchiveError(`${path} is truncated`);
  const salt = bytes.subarray(at, at + 16);
  const nonce = bytes.subarray(at + 16, at + 28);
  const tag = bytes.subarray(bytes.length - 16);
  const decipher = createDecipheriv('chacha20-poly1305', key.derive(salt), nonce, {
    authTagLength: 16,
  });
  decipher.setAAD(bytes.subarray(0, at + 28), { plaintextLength: bytes.length - at - 28 - 16 });
  decipher.setAuthTag(tag);
  try {
    return Buffer.concat([
      decipher.update(bytes.subarray(at + 28, bytes.length - 16)),
      decipher.final(),
    ]);
  } catch {
    throw new ArchiveError(
      `${path}: wrong archive key, or the archive is corrupted (authentication failed)`
    );
  }
}

/** A read archive: its manifest and every section, parsed and verified. */
export interface VerifiedArchive {
  manifest: Manifest;
  sections: Array<{ section: Section; records: AnyRecord[] }>;
}

/**
 * Reads an archive into memory and verifies all of it (gzip CRC, tar
 * structure, manifest schema, every section's size, SHA-256 and record
 * count, every record's shape) before returning. Any defect is an
 * ArchiveError; callers write nothing until this has returned.
 */
export async function readArchive(
  path: string,
  key: ArchiveKey | null = null
): Promise<VerifiedArchive & { encrypted: boolean }> {
  let gz: Buffer;
  try {
    if ((await stat(path)).size > MAX_ARCHIVE_BYTES)
      throw new ArchiveError(`${path} is larger than ${MAX_ARCHIVE_BYTES} bytes`);
    gz = await readFile(path);
  } catch (err) {
    if (err instanceof ArchiveError) throw err;
    const e = err as NodeJS.ErrnoException;
    throw new ArchiveError(
      e.code === 'ENOENT' ? `no archive at ${path}` : `cannot read ${path}: ${e.code ?? e.message}`
    );
  }
  const encrypted = isEncryptedArchive(gz);
  if (encrypted) gz = openSealedArchive(gz, key, path);
  else if (key) {
    // Its checksums are not keyed: anyone could have written it.
    throw new ArchiveError(
      `${path} is not encrypted, but an archive key was given: refusing a plaintext archive (leave out --archive-key-file to read it)`
    );
  }
  let tarBytes: Buffer;
  try {
    tarBytes = gunzipSync(gz, { maxOutputLength: MAX_ARCHIVE_BYTES });
  } catch (err) {
    throw new ArchiveError(
      `${path} is not a readable Sealbus backup (gzip: ${(err as Error).message})`
    );
  }
  const files = new Map<string, Buffer>();
  try {
    await new Promise<void>((resolve, reject) => {
      const extract = tar.extract();
      extract.on('entry', (header, stream, next) => {
        const chunks: Buffer[] = [];
        stream.on('error', reject);
        stream.on('data', (data: unknown) => chunks.push(data as Buffer));
        stream.on('end', () => {
          if (header.type === 'file') {
            if (files.has(header.name)) {
              reject(new ArchiveError(`${path} holds ${header.name} twice`));
              return;
            }
            files.set(header.name, Buffer.concat(chunks));
          }
          next();
        });
      });
      extract.on('error', reject);
      extract.on('finish', resolve);
      extract.end(tarBytes);
    });
  } catch (err) {
    if (err instanceof ArchiveError) throw err;
    throw new ArchiveError(
      `${path} is not a readable Sealbus backup (tar: ${(err as Error).message})`
    );
  }
  return { ...verifyFiles(files, path), encrypted };
}

/** Verifies extracted archive files (exported for tests of single defects). */
export function verifyFiles(files: Map<string, Buffer>, path: string): VerifiedArchive {
  const raw = files.get('manifest.json');
  if (!raw) throw new ArchiveError(`${path} has no manifest.json: not a Sealbus backup`);
  let manifest: Manifest;
  try {
    manifest = manifestSchema.parse(JSON.parse(raw.toString('utf8')));
  } catch (err) {
    const hint =
      err instanceof z.ZodError ? err.issues.map((i) => i.path.join('.')).join(', ') : '';
    throw new ArchiveError(
      `${path}: manifest.json is not a valid version-${ARCHIVE_FORMAT_VERSION} manifest${hint ? ` (${hint})` : ''}`
    );
  }
  const known = new Set(['manifest.json', ...manifest.sections.map((s) => s.file)]);
  for (const name of files.keys()) {
    if (!known.has(name)) throw new ArchiveError(`${path}: unexpected file ${name} in archive`);
  }
  const sections: VerifiedArchive['sections'] = [];
  for (const section of manifest.sections) {
    const body = files.get(section.file);
    if (!body) throw new ArchiveError(`${path}: ${section.file} is missing`);
    if (body.length !== section.bytes || sha256(body) !== section.sha256) {
      throw new ArchiveError(
        `${path}: checksum mismatch in ${section.file} (the archive is corrupted or was altered)`
      );
    }
    const schema =
      section.kind === 'kv'
        ? kvRecordSchema
        : section.kind === 'stream'
          ? streamRecordSchema
          : blobRecordSchema;
    // Line by line as bytes (a section of large blobs is more than one
    // string holds), each parsed before the next is looked at: a bad line
    // stops the read at once, and nothing is held per line but its record.
    const records: AnyRecord[] = [];
    for (let at = 0, i = 0; at < body.length; i++) {
      const nl = body.indexOf(0x0a, at);
      if (nl < 0) throw new ArchiveError(`${path}: ${section.file} is truncated`);
      if (records.length >= section.count)
        throw new ArchiveError(
          `${path}: ${section.file} holds more records than the manifest's ${section.count}`
        );
      let r: AnyRecord;
      try {
        r = schema.parse(JSON.parse(body.toString('utf8', at, nl)));
      } catch {
        throw new ArchiveError(`${path}: ${section.file} line ${i + 1} is not a valid record`);
      }
      if (section.kind === 'blobs') {
        const defect = blobRecordDefect(r as BlobRecord);
        if (defect) throw new ArchiveError(`${path}: ${section.file} line ${i + 1}: ${defect}`);
      }
      records.push(r);
      at = nl + 1;
    }
    if (records.length !== section.count) {
      throw new ArchiveError(
        `${path}: ${section.file} holds ${records.length} records, the manifest says ${section.count}`
      );
    }
    sections.push({ section, records });
  }
  return { manifest, sections };
}

/** Bytes for people. */
export function humanBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}
