import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import {
  BlobError,
  decryptBlob,
  encryptBlob,
  parseBlobRef,
  type BlobData,
  type BlobRef,
} from '@sealbus/crypto';
import { SealbusError } from './errors.js';

/**
 * Uploads: the signed request carries the ciphertext's `Content-Digest` in
 * its headers, before the body, but a stream's digest is known only at its
 * end. So the SDK encrypts in one pass into a spool file (ciphertext only:
 * the plaintext never touches the disk) in a fresh 0700 directory under
 * `os.tmpdir()`, file 0600, then uploads the file with the digest the
 * encryption computed, and deletes it. Memory stays at a few chunks; the
 * spool also lets a failed attempt be sent again to the next control URL.
 */
export interface SpooledBlob {
  /** The ciphertext file. */
  readonly path: string;
  /** Ciphertext bytes. */
  readonly stored: number;
  /** SHA-256 of the ciphertext (the blob's name on the server). */
  readonly sha256: Uint8Array;
  /** The ref, key included (no name or type). */
  readonly ref: BlobRef;
  /** Deletes the spool. */
  dispose(): Promise<void>;
}

export async function spoolBlob(data: BlobData): Promise<SpooledBlob> {
  const dir = await mkdtemp(join(tmpdir(), 'sealbus-blob-'));
  const dispose = () => rm(dir, { recursive: true, force: true });
  try {
    const path = join(dir, 'ciphertext');
    const out = createWriteStream(path, { flags: 'wx', mode: 0o600 });
    const sealed = encryptBlob(data);
    for await (const piece of sealed.ciphertext) {
      if (!out.write(piece)) await once(out, 'drain');
    }
    out.end();
    await once(out, 'finish');
    const s = await sealed.done;
    return {
      path,
      stored: s.stored,
      sha256: Buffer.from(s.hash, 'hex'),
      ref: s.ref,
      dispose,
    };
  } catch (err) {
    await dispose();
    throw blobError(err);
  }
}

/** The crypto package's blob errors as SDK errors (same codes). */
export function blobError(err: unknown): unknown {
  if (err instanceof BlobError) {
    const code =
      err.code === 'BLOB_CORRUPT' || err.code === 'BAD_BLOB_REF' ? err.code : 'BAD_INPUT';
    return new SealbusError(code, err.message, { cause: err });
  }
  return err;
}

export function checkRef(ref: unknown): BlobRef {
  try {
    return parseBlobRef(ref);
  } catch (err) {
    throw blobError(err);
  }
}

/** Opens a stored blob: plaintext pieces, each yielded only after its chunk verified. */
export async function* openBlob(
  ciphertext: AsyncIterable<Uint8Array>,
  ref: BlobRef
): AsyncGenerator<Uint8Array, void, undefined> {
  try {
    yield* decryptBlob(ciphertext, ref);
  } catch (err) {
    throw blobError(err);
  }
}

/**
 * The message a `publishBlob` sends: a small JSON envelope the SDK
 * recognises on delivery (`m.blob`). Another message that happens to be
 * exactly this shape is read as a blob ref too; the ref is still checked
 * (`parseBlobRef`) and the blob verified when fetched.
 */
export const BLOB_ENVELOPE_KEY = 'sealbus.blob.v1';

export function blobEnvelope(ref: BlobRef): Uint8Array {
  return new TextEncoder().encode(JSON.stringify({ [BLOB_ENVELOPE_KEY]: ref }));
}

const PREFIX = new TextEncoder().encode(`{"${BLOB_ENVELOPE_KEY}":`);

/** The ref a message carries, when it is a blob envelope; undefined otherwise. */
export function blobOfMessage(data: Uint8Array): BlobRef | undefined {
  if (data.length > 4096 || data.length < PREFIX.length) return undefined;
  for (let i = 0; i < PREFIX.length; i++) if (data[i] !== PREFIX[i]) return undefined;
  try {
    const v = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(data)) as Record<
      string,
      unknown
    >;
    if (Object.keys(v).length !== 1) return undefined;
    return parseBlobRef(v[BLOB_ENVELOPE_KEY]);
  } catch {
    return undefined;
  }
}

export interface StreamedExchange {
  status: number;
  headers: http.IncomingHttpHeaders;
  /** The answer's body, as it arrives. */
  body: http.IncomingMessage;
}

/**
 * One HTTP exchange with a streamed request body (from `file`) and a
 * streamed answer. `idleMs` bounds silence, not the whole transfer (a large
 * blob takes as long as it takes while bytes move).
 */
export function streamExchange(
  method: string,
  url: URL,
  headers: Record<string, string>,
  o: { file?: { path: string; size: number }; ca?: string | Buffer; idleMs: number }
): Promise<StreamedExchange> {
  const mod = url.protocol === 'https:' ? https : http;
  return new Promise((resolve, reject) => {
    const req = mod.request(url, {
      method,
      headers: o.file ? { ...headers, 'content-length': String(o.file.size) } : headers,
      agent: false,
      ...(o.ca && url.protocol === 'https:' ? { ca: o.ca } : {}),
    });
    req.setTimeout(o.idleMs, () => req.destroy(new Error(`no progress within ${o.idleMs} ms`)));
    req.on('error', reject);
    req.on('response', (res) => {
      res.on('error', () => undefined);
      resolve({ status: res.statusCode ?? 0, headers: res.headers, body: res });
    });
    if (o.file) {
      const src = createReadStream(o.file.path);
      src.on('error', (err) => req.destroy(err));
      src.pipe(req);
    } else req.end();
  });
}

/** Reads a (small) answer body whole, at most `max` bytes. */
export async function readSmall(body: http.IncomingMessage, max = 64 * 1024): Promise<Buffer> {
  const parts: Buffer[] = [];
  let n = 0;
  for await (const p of body as AsyncIterable<Buffer>) {
    n += p.length;
    if (n > max) {
      body.destroy();
      break;
    }
    parts.push(p);
  }
  return Buffer.concat(parts);
}
