import { createHash } from 'node:crypto';
import { contentDigestSha256, sameDigest, SignatureError } from '@sealbus/crypto';
import { memberCanWrite, roomIdSchema } from '@sealbus/protocol';
import { z } from 'zod';
import type { AppContext } from '../context.js';
import { HttpError } from '../errors.js';
import { audit, intend, param, requireActor, requireMembership, type Services } from '../guard.js';
import type { RouteDef } from './types.js';

/** `--blob-max-bytes` when not given. */
export const DEFAULT_BLOB_MAX_BYTES = 64 * 1024 * 1024;
/** `--room-blob-bytes` when not given. */
export const DEFAULT_ROOM_BLOB_BYTES = 1024 * 1024 * 1024;

/** The blob limits and this node's uploads in progress, by room. */
export interface BlobLimits {
  /** Largest blob (413 BLOB_TOO_LARGE over it). */
  maxBytes: number;
  /** Bytes of blobs one room may hold (507 ROOM_BLOB_QUOTA over it). */
  roomBytes: number;
  /** Bytes of blobs all rooms of one owner may hold together (507 OWNER_BLOB_QUOTA over it). */
  ownerBytes: number;
  /** Bytes received so far by this node's uploads in progress, per room. */
  readonly uploading: Map<string, number>;
  /** The same, per owner of the rooms uploaded to. */
  readonly uploadingByOwner: Map<string, number>;
  /** Each owner's commit lock on this node (see lockOwner). */
  readonly commits: Map<string, Promise<void>>;
}

/**
 * Takes this node's commit lock of one owner's blobs: resolves with its
 * release once every earlier holder released it.
 */
async function lockOwner(limits: BlobLimits, owner: string): Promise<() => void> {
  const before = limits.commits.get(owner) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((r) => (release = r));
  const chained = before.then(() => mine);
  limits.commits.set(owner, chained);
  await before;
  return () => {
    release();
    if (limits.commits.get(owner) === chained) limits.commits.delete(owner);
  };
}

/** Adds `n` (may be negative) to a running total in `m`, dropping it at zero. */
function bump(m: Map<string, number>, key: string, n: number): void {
  const v = (m.get(key) ?? 0) + n;
  if (v > 0) m.set(key, v);
  else m.delete(key);
}

const hashParam = z
  .string()
  .regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex characters (a SHA-256)');
const blobResponseSchema = z.object({ hash: z.string(), size: z.number().int() });
const blobDeletedResponseSchema = blobResponseSchema.extend({ deleted: z.literal(true) });

function limitsOf(s: Services): BlobLimits {
  if (!s.blobs) throw new HttpError(404, 'NOT_FOUND', 'blobs are not served here');
  return s.blobs;
}

/** Refuses a request whose body is not read to its end: close rather than let Node drain it. */
function refuse(c: AppContext, status: 413 | 507, code: string, message: string): HttpError {
  c.header('connection', 'close');
  return new HttpError(status, code, message);
}

/** The declared Content-Length, when there is one that parses. */
function declaredLength(c: AppContext): number | undefined {
  const v = c.req.header('content-length');
  return v !== undefined && /^[0-9]{1,15}$/.test(v) ? Number(v) : undefined;
}

/** The body's claimed SHA-256: verified by auth, else (auth off or soft) read as sent. */
function claimedDigest(c: AppContext): Uint8Array {
  const d = c.get('bodyDigest');
  if (d) return d;
  try {
    return contentDigestSha256(c.req.header('content-digest'));
  } catch (err) {
    throw new HttpError(400, (err as SignatureError).code, (err as Error).message);
  }
}

/** The request body as it arrives, each piece passed to `check` (which throws to stop) first. */
async function* bodyPieces(
  c: AppContext,
  check: (piece: Uint8Array) => void
): AsyncGenerator<Uint8Array, void, undefined> {
  const body = c.req.raw.body;
  if (!body) return;
  const reader = body.getReader();
  let ended = false;
  try {
    while (true) {
      const r = await reader.read();
      if (r.done) break;
      check(r.value);
      yield r.value;
    }
    ended = true;
  } finally {
    if (!ended) await reader.cancel().catch(() => undefined);
  }
}

export const blobRoutes: RouteDef[] = [
  {
    method: 'post',
    path: '/rooms/{id}/blobs',
    summary:
      'Store a blob (ciphertext, application/octet-stream) in the room; idempotent (writers and the owner)',
    access: 'member',
    streamBody: true,
    status: 201,
    response: blobResponseSchema,
    async handler(c, s) {
      const limits = limitsOf(s);
      const id = param(c, 'id', roomIdSchema);
      const actor = requireActor(c);
      const { me } = await requireMembership(s, c, id, { action: 'blob.put', owner: false });
      if (!memberCanWrite(actor, me, Date.now())) {
        await audit(s, c, 'blob.put', id, 'denied', { reason: 'not a writer' });
        throw new HttpError(403, 'NOT_WRITER', 'only writers and the owner may store blobs');
      }
      if (!/^application\/octet-stream\s*(;|$)/i.test(c.req.header('content-type') ?? ''))
        throw new HttpError(
          415,
          'UNSUPPORTED_MEDIA_TYPE',
          'the body must be application/octet-stream'
        );
      const digest = claimedDigest(c);
      const hash = Buffer.from(digest).toString('hex');
      const declared = declaredLength(c);
      const tooLarge = () =>
        refuse(c, 413, 'BLOB_TOO_LARGE', `a blob may have at most ${limits.maxBytes} bytes`);
      if (declared !== undefined && declared > limits.maxBytes) throw tooLarge();
      const mismatch = () =>
        new HttpError(400, 'DIGEST_MISMATCH', 'body does not match its Content-Digest');

      const existing = await s.store.blobs.info(id, hash);
      if (existing) {
        // Stored already: the body is still read and checked (nothing is
        // answered for bytes that were not seen), then dropped.
        const sha = createHash('sha256');
        let n = 0;
        for await (const p of bodyPieces(c, (p) => {
          n += p.length;
          if (n > limits.maxBytes) throw tooLarge();
        }))
          sha.update(p);
        if (!sameDigest(sha.digest(), digest)) throw mismatch();
        return c.json({ hash, size: existing.size }, 200);
      }

      const quota = () =>
        refuse(
          c,
          507,
          'ROOM_BLOB_QUOTA',
          `the room's blobs may take at most ${limits.roomBytes} bytes`
        );
      const ownerQuota = () =>
        refuse(
          c,
          507,
          'OWNER_BLOB_QUOTA',
          `the blobs of all rooms of this room's owner may take at most ${limits.ownerBytes} bytes`
        );
      // The owner's share: every room it owns (`--max-rooms-per-user` of them
      // at most), so owning many rooms does not multiply the room quota.
      const room = await s.store.rooms.get(id);
      if (!room) throw new HttpError(404, 'NOT_FOUND', 'no such room');
      const owner = room.owner;
      const owned = (await s.store.rooms.membershipsOf(owner))
        .filter((m) => m.role === 'owner')
        .map((m) => m.room);
      if (!owned.includes(id)) owned.push(id);
      const usages = await Promise.all(owned.map((r) => s.store.blobs.usage(r)));
      const used = usages[owned.indexOf(id)]!;
      const ownerUsed = usages.reduce((a, b) => a + b, 0);
      // Uploads in progress on this node count too (others' on other nodes
      // do not: a cluster may overshoot by what is in flight there).
      const others = () => limits.uploading.get(id) ?? 0;
      const ownerOthers = () => limits.uploadingByOwner.get(owner) ?? 0;
      if (declared !== undefined && used + others() + declared > limits.roomBytes) throw quota();
      if (declared !== undefined && ownerUsed + ownerOthers() + declared > limits.ownerBytes)
        throw ownerQuota();

      await intend(s, c, 'blob.put', id, { hash });
      let mine = 0;
      let release: (() => void) | undefined;
      try {
        const stored = await s.store.blobs.put(
          id,
          hash,
          bodyPieces(c, (p) => {
            mine += p.length;
            bump(limits.uploading, id, p.length);
            bump(limits.uploadingByOwner, owner, p.length);
            if (mine > limits.maxBytes) throw tooLarge();
            if (used + others() > limits.roomBytes) throw quota();
            if (ownerUsed + ownerOthers() > limits.ownerBytes) throw ownerQuota();
          }),
          async (sha, size) => {
            if (!sameDigest(sha, digest)) throw mismatch();
            // The commit: under this owner's lock (held until the object's
            // metadata is written), the quotas are checked again against
            // what is stored now, so uploads held open while others
            // completed cannot all fit a quota the first check let them in
            // under (node-local: other nodes' commits race within ms).
            release = await lockOwner(limits, owner);
            const nowUsed = await Promise.all(owned.map((r) => s.store.blobs.usage(r)));
            const roomNow = nowUsed[owned.indexOf(id)]!;
            const ownerNow = nowUsed.reduce((a, b) => a + b, 0);
            if (roomNow + size > limits.roomBytes) throw quota();
            if (ownerNow + size > limits.ownerBytes) throw ownerQuota();
          }
        );
        s.metrics?.blobBytes('in', stored.size);
        await audit(s, c, 'blob.put', id, 'ok', { hash, size: stored.size });
        return c.json({ hash, size: stored.size }, 201);
      } finally {
        release?.();
        bump(limits.uploading, id, -mine);
        bump(limits.uploadingByOwner, owner, -mine);
      }
    },
  },
  {
    method: 'get',
    path: '/rooms/{id}/blobs/{hash}',
    summary: 'Fetch a blob, streamed as stored (members; HEAD: its size only)',
    access: 'member',
    status: 200,
    response: z.string().describe('the stored bytes, application/octet-stream'),
    async handler(c, s) {
      limitsOf(s);
      const id = param(c, 'id', roomIdSchema);
      const hash = param(c, 'hash', hashParam);
      await requireMembership(s, c, id, { action: 'blob.get' });
      const notFound = () =>
        new HttpError(404, 'NOT_FOUND', `blob ${hash} not found in room ${id}`);
      const headers = (size: number) => ({
        'content-type': 'application/octet-stream',
        'content-length': String(size),
        etag: `"${hash}"`,
        'cache-control': 'private, no-store',
      });
      if (c.req.method === 'HEAD') {
        const info = await s.store.blobs.info(id, hash);
        if (!info) throw notFound();
        return new Response(null, { status: 200, headers: headers(info.size) });
      }
      const blob = await s.store.blobs.get(id, hash);
      if (!blob) throw notFound();
      const metrics = s.metrics;
      const counted = blob.data.pipeThrough(
        new TransformStream<Uint8Array, Uint8Array>({
          transform(piece, controller) {
            metrics?.blobBytes('out', piece.length);
            controller.enqueue(piece);
          },
        })
      );
      return new Response(counted, { status: 200, headers: headers(blob.size) });
    },
  },
  {
    method: 'delete',
    path: '/rooms/{id}/blobs/{hash}',
    summary: 'Delete a blob (owner only)',
    access: 'owner',
    status: 200,
    response: blobDeletedResponseSchema,
    async handler(c, s) {
      limitsOf(s);
      const id = param(c, 'id', roomIdSchema);
      const hash = param(c, 'hash', hashParam);
      await requireMembership(s, c, id, { action: 'blob.delete', owner: true });
      if (!(await s.store.blobs.info(id, hash)))
        throw new HttpError(404, 'NOT_FOUND', `blob ${hash} not found in room ${id}`);
      await intend(s, c, 'blob.delete', id, { hash });
      const gone = await s.store.blobs.delete(id, hash);
      if (!gone) throw new HttpError(404, 'NOT_FOUND', `blob ${hash} not found in room ${id}`);
      await audit(s, c, 'blob.delete', id, 'ok', { hash, size: gone.size });
      return c.json({ hash, size: gone.size, deleted: true as const });
    },
  },
];
