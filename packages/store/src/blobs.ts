import { createHash } from 'node:crypto';
import { headers, nuid, type JetStreamClient, type JetStreamManager, type ObjectStore } from 'nats';
import { StoreError, isStreamNotFound, toStoreError } from './errors.js';

/**
 * Room blobs: opaque bytes (the SDK stores ciphertext only) kept in one
 * JetStream object store per room, `sealbus_blobs_<room>`, in account APP
 * beside the room streams (under its storage cap, `--app-max-bytes`, so
 * uploads can never fill the space the control state needs; users hold no
 * JetStream rights there), replicated like the buckets. Objects are named by the lowercase
 * hex SHA-256 of their bytes.
 *
 * One store per room, not one for all: a room's usage is the sum over its own
 * (small) object list, deleting a room is one stream delete that cannot miss
 * an object or touch another room's, and the same bytes uploaded to two rooms
 * are two objects that each room's deletion and quota own.
 *
 * Writes do not use nats.js `ObjectStore.put`: it publishes every chunk
 * without waiting for acknowledgements (memory grows with the upload when
 * the store is slower than the client) and it cannot be told to abandon an
 * upload whose digest turns out wrong after the last byte. `put` here keeps
 * at most `WINDOW` chunks unacknowledged, writes the object's metadata (the
 * commit point; the same layout nats.js writes, so `nats object` tools read
 * it) only after the caller accepted the whole body, and otherwise purges
 * the chunks it wrote once every publish has settled, so nothing
 * half-written remains. Reads fetch one chunk at a time on demand.
 */
export const BLOB_STORE_PREFIX = 'sealbus_blobs_';
/** Bytes per stored chunk (nats.js' default object chunk). */
export const BLOB_STORE_CHUNK = 128 * 1024;
const WINDOW = 8;
/**
 * Chunks a download reads ahead of its reader (1 MiB per download): the next
 * chunk's fetch overlaps sending the last one. Still bounded: a slow reader
 * holds at most this many chunks in the daemon.
 */
const READ_AHEAD = 8;
const HASH_RE = /^[0-9a-f]{64}$/;
const ROOM_RE = /^[0-9a-f]{24}$/;

export interface BlobInfo {
  hash: string;
  size: number;
}

export interface StoredBlob extends BlobInfo {
  /** The bytes, read one chunk at a time as the stream is pulled. */
  data: ReadableStream<Uint8Array>;
}

interface ObjectMeta {
  name: string;
  bucket: string;
  nuid: string;
  size: number;
  chunks: number;
  digest: string;
  deleted?: boolean;
}

const b64urlPadded = (b: Uint8Array | string) =>
  Buffer.from(b).toString('base64').replace(/\+/g, '-').replace(/\//g, '_');

function checkRoom(room: string): string {
  if (!ROOM_RE.test(room)) throw new StoreError('INVALID', 'blob room: expected a room id');
  return room;
}

function checkHash(hash: string): string {
  if (!HASH_RE.test(hash))
    throw new StoreError('INVALID', 'blob hash: expected 64 lowercase hex characters');
  return hash;
}

export class RoomBlobs {
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;
  readonly #replicas: number;

  constructor(js: JetStreamClient, jsm: JetStreamManager, replicas: number) {
    this.#js = js;
    this.#jsm = jsm;
    this.#replicas = replicas;
  }

  static bucketOf(room: string): string {
    return BLOB_STORE_PREFIX + checkRoom(room);
  }

  /** The room's store, or null when it has none yet (nothing is created). */
  async #existing(room: string): Promise<ObjectStore | null> {
    const bucket = RoomBlobs.bucketOf(room);
    try {
      await this.#jsm.streams.info(`OBJ_${bucket}`);
    } catch (err) {
      if (isStreamNotFound(err)) return null;
      throw toStoreError(err, `blob store of room ${room}`);
    }
    return this.#js.views.os(bucket);
  }

  async #meta(room: string, hash: string): Promise<ObjectMeta | null> {
    checkHash(hash);
    const os = await this.#existing(room);
    if (!os) return null;
    try {
      const info = await os.info(hash);
      return info && !info.deleted ? (info as unknown as ObjectMeta) : null;
    } catch (err) {
      throw toStoreError(err, `blob ${hash} of room ${room}`);
    }
  }

  /** The blob's size, or null when the room has no such blob. */
  async info(room: string, hash: string): Promise<BlobInfo | null> {
    const m = await this.#meta(room, hash);
    return m ? { hash, size: m.size } : null;
  }

  /** The room's blobs, sorted by hash (none when it has no store). */
  async list(room: string): Promise<BlobInfo[]> {
    const os = await this.#existing(room);
    if (!os) return [];
    try {
      return (await os.list())
        .filter((o) => !o.deleted && HASH_RE.test(o.name))
        .map((o) => ({ hash: o.name, size: o.size }))
        .sort((a, b) => (a.hash < b.hash ? -1 : a.hash > b.hash ? 1 : 0));
    } catch (err) {
      throw toStoreError(err, `list the blobs of room ${room}`);
    }
  }

  /** Bytes the room's blobs take (their contents; JetStream's overhead aside). */
  async usage(room: string): Promise<number> {
    const os = await this.#existing(room);
    if (!os) return 0;
    try {
      let total = 0;
      for (const o of await os.list()) if (!o.deleted) total += o.size;
      return total;
    } catch (err) {
      throw toStoreError(err, `blob usage of room ${room}`);
    }
  }

  /**
   * Stores `source` as the room's blob `hash`. `accept` sees the SHA-256 and
   * size of the bytes read once the source ended, and throws to refuse them;
   * an error from `source` (a limit) or `accept` (a digest) leaves nothing
   * stored and is rethrown as it is. The hash must be the bytes' own: it is
   * checked here too.
   */
  async put(
    room: string,
    hash: string,
    source: AsyncIterable<Uint8Array>,
    accept: (sha256: Buffer, size: number) => void | Promise<void> = () => {}
  ): Promise<BlobInfo> {
    checkHash(hash);
    const bucket = RoomBlobs.bucketOf(room);
    try {
      await this.#js.views.os(bucket, {
        replicas: this.#replicas,
        description: `encrypted blobs of room ${room}`,
      });
    } catch (err) {
      throw toStoreError(err, `open blob store of room ${room}`);
    }
    const id = nuid.next();
    const chunkSubj = `$O.${bucket}.C.${id}`;
    const sha = createHash('sha256');
    let size = 0;
    let chunks = 0;
    const inflight: Promise<unknown>[] = [];
    const pending = Buffer.allocUnsafe(BLOB_STORE_CHUNK);
    let fill = 0;
    // The first publish error, kept: every publish has its handler from the
    // moment it is made (an unobserved rejection would end the process), and
    // the upload stops at the next piece.
    let failed: unknown;
    const publish = async (bytes: Uint8Array) => {
      if (failed !== undefined) throw failed;
      // Copied: the pending buffer is reused while the publish is in flight.
      const p = this.#js.publish(chunkSubj, Uint8Array.from(bytes));
      p.catch((err: unknown) => {
        failed ??= err;
      });
      inflight.push(p);
      chunks++;
      if (inflight.length >= WINDOW) await inflight.shift();
    };
    try {
      for await (const piece of source) {
        if (failed !== undefined) throw failed;
        sha.update(piece);
        size += piece.length;
        let off = 0;
        while (off < piece.length) {
          const n = Math.min(BLOB_STORE_CHUNK - fill, piece.length - off);
          pending.set(piece.subarray(off, off + n), fill);
          fill += n;
          off += n;
          if (fill === BLOB_STORE_CHUNK) {
            await publish(pending);
            fill = 0;
          }
        }
      }
      if (fill > 0) await publish(pending.subarray(0, fill));
      await Promise.all(inflight.splice(0));
      if (failed !== undefined) throw failed;
      const digest = sha.digest();
      await accept(digest, size);
      if (digest.toString('hex') !== hash)
        throw new StoreError('INVALID', 'blob: the bytes do not hash to the name they were given');
      const meta: ObjectMeta & Record<string, unknown> = {
        name: hash,
        description: '',
        options: { max_chunk_size: BLOB_STORE_CHUNK },
        bucket,
        nuid: id,
        size,
        chunks,
        mtime: new Date().toISOString(),
        digest: `SHA-256=${b64urlPadded(digest)}`,
        deleted: false,
      };
      const h = headers();
      h.set('Nats-Rollup', 'sub');
      const old = await this.#meta(room, hash);
      await this.#js.publish(
        `$O.${bucket}.M.${b64urlPadded(hash)}`,
        new TextEncoder().encode(JSON.stringify(meta)),
        { headers: h }
      );
      // Same name, same bytes: a concurrent upload's chunks are now unreferenced.
      if (old && old.nuid !== id)
        await this.#jsm.streams
          .purge(`OBJ_${bucket}`, { filter: `$O.${bucket}.C.${old.nuid}` })
          .catch(() => undefined);
      return { hash, size };
    } catch (err) {
      // Every publish settles before the purge, so no chunk lands after it.
      await Promise.allSettled(inflight);
      await this.#jsm.streams.purge(`OBJ_${bucket}`, { filter: chunkSubj }).catch(() => undefined);
      if (isNatsError(err)) throw toStoreError(err, `store blob in room ${room}`);
      throw err;
    }
  }

  /** The blob, streamed one stored chunk per pull; null when the room has no such blob. */
  async get(room: string, hash: string): Promise<StoredBlob | null> {
    const m = await this.#meta(room, hash);
    if (!m) return null;
    const stream = `OBJ_${RoomBlobs.bucketOf(room)}`;
    const subj = `$O.${m.bucket}.C.${m.nuid}`;
    const jsm = this.#jsm;
    let seq = 0;
    let read = 0;
    let got = 0;
    const data = new ReadableStream<Uint8Array>(
      {
        async pull(controller) {
          if (got === m.chunks) {
            if (read !== m.size)
              controller.error(new StoreError('CORRUPT', `blob ${hash}: stored size differs`));
            else controller.close();
            return;
          }
          try {
            // STREAM.MSG.GET takes next_by_subj (server >= 2.10); nats.js' type omits it.
            const query = { next_by_subj: subj, seq: seq + 1 } as unknown as { seq: number };
            const msg = await jsm.streams.getMessage(stream, query);
            seq = msg.seq;
            got++;
            read += msg.data.length;
            controller.enqueue(msg.data);
          } catch (err) {
            controller.error(toStoreError(err, `read blob ${hash}`));
          }
        },
      },
      { highWaterMark: READ_AHEAD }
    );
    return { hash, size: m.size, data };
  }

  /** Deletes one blob; false when there was none. */
  async delete(room: string, hash: string): Promise<BlobInfo | null> {
    const m = await this.#meta(room, hash);
    if (!m) return null;
    const os = await this.#existing(room);
    try {
      await os!.delete(hash);
    } catch (err) {
      throw toStoreError(err, `delete blob ${hash}`);
    }
    return { hash, size: m.size };
  }

  /** Deletes every blob of the room (its whole store); the number of blobs it held. */
  async deleteRoom(room: string): Promise<number> {
    const os = await this.#existing(room);
    if (!os) return 0;
    try {
      const n = (await os.list()).filter((o) => !o.deleted).length;
      await os.destroy();
      return n;
    } catch (err) {
      if (isStreamNotFound(err)) return 0;
      throw toStoreError(err, `delete the blobs of room ${room}`);
    }
  }
}

function isNatsError(err: unknown): boolean {
  return (err as { name?: unknown })?.name === 'NatsError';
}
