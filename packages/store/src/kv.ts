import type { KV, KvEntry } from 'nats';
import { StoreError, isWrongLastSequence, toStoreError } from './errors.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

export function encodeJson(value: unknown): Uint8Array {
  return enc.encode(JSON.stringify(value));
}

/** Decodes a stored JSON row through `parse`; a bad row is CORRUPT, not skipped. */
export function decodeJson<T>(entry: KvEntry, parse: (raw: unknown) => T): T {
  let raw: unknown;
  try {
    raw = JSON.parse(dec.decode(entry.value));
  } catch {
    throw new StoreError('CORRUPT', `${entry.bucket}/${entry.key}: stored value is not JSON`);
  }
  try {
    return parse(raw);
  } catch (err) {
    throw new StoreError('CORRUPT', `${entry.bucket}/${entry.key}: ${(err as Error).message}`, {
      cause: err,
    });
  }
}

/** The live value of a key, or null when absent, deleted or purged. */
export async function getLive(kv: KV, key: string, what: string): Promise<KvEntry | null> {
  let e: KvEntry | null;
  try {
    e = await kv.get(key);
  } catch (err) {
    throw toStoreError(err, what);
  }
  return e && e.operation === 'PUT' ? e : null;
}

/**
 * Create-only write. Returns the new revision, or null if the key already
 * holds a live value (which is left exactly as it was).
 */
export async function createOnly(
  kv: KV,
  key: string,
  value: Uint8Array,
  what: string
): Promise<number | null> {
  try {
    return await kv.create(key, value);
  } catch (err) {
    if (isWrongLastSequence(err)) return null;
    throw toStoreError(err, what);
  }
}

export interface CasResult<T> {
  value: T;
  revision: number;
  /** False when `mutate` decided nothing needed to change. */
  changed: boolean;
}

export interface CasOptions {
  /** Attempts before giving up with CONFLICT (default 16). */
  maxAttempts?: number;
}

/**
 * Read-modify-write with compare-and-set on the KV revision: read the row,
 * let `mutate` compute the next value (or return null for "no change"),
 * write it only if nobody wrote in between, and retry from the read when
 * somebody did. No update is ever lost to a concurrent writer.
 *
 * @example
 * await casUpdate(kv, key, parseUser, (u) => (u.status === 'revoked' ? null : { ...u, status: 'revoked' }));
 */
export async function casUpdate<T>(
  kv: KV,
  key: string,
  parse: (raw: unknown) => T,
  mutate: (current: T) => T | null,
  what: string,
  options: CasOptions = {}
): Promise<CasResult<T>> {
  const maxAttempts = options.maxAttempts ?? 16;
  for (let attempt = 1; ; attempt++) {
    const entry = await getLive(kv, key, what);
    if (!entry) throw new StoreError('NOT_FOUND', `${what}: ${key} not found`);
    const current = decodeJson(entry, parse);
    const next = mutate(current);
    if (next === null) return { value: current, revision: entry.revision, changed: false };
    try {
      const revision = await kv.update(key, encodeJson(next), entry.revision);
      return { value: next, revision, changed: true };
    } catch (err) {
      if (!isWrongLastSequence(err)) throw toStoreError(err, what);
      if (attempt >= maxAttempts) {
        throw new StoreError(
          'CONFLICT',
          `${what}: ${key} kept changing under us (${attempt} attempts)`
        );
      }
      // Jittered backoff so two writers in lockstep fall out of step.
      await new Promise((r) => setTimeout(r, Math.random() * Math.min(50, 2 ** attempt)));
    }
  }
}

/** Every live value of a bucket (optionally under a key filter), parsed. */
export async function readAll<T>(
  kv: KV,
  parse: (raw: unknown) => T,
  what: string,
  filter?: string
): Promise<T[]> {
  let keys: string[];
  try {
    keys = [];
    for await (const k of await kv.keys(filter)) keys.push(k);
  } catch (err) {
    throw toStoreError(err, what);
  }
  const out: T[] = [];
  const IN_FLIGHT = 64;
  for (let i = 0; i < keys.length; i += IN_FLIGHT) {
    const batch = await Promise.all(keys.slice(i, i + IN_FLIGHT).map((k) => getLive(kv, k, what)));
    for (const e of batch) if (e) out.push(decodeJson(e, parse));
  }
  return out;
}

/**
 * Every live value under a key filter (wildcards allowed anywhere), read by
 * one ordered consumer instead of a get per key. Bounded by `timeoutMs`.
 */
export async function scan<T>(
  kv: KV,
  filter: string,
  parse: (raw: unknown) => T,
  what: string,
  timeoutMs = 10_000
): Promise<T[]> {
  const latest = new Map<string, KvEntry>();
  let iter: Awaited<ReturnType<KV['watch']>>;
  let initialized!: () => void;
  const ready = new Promise<void>((r) => (initialized = r));
  try {
    iter = await kv.watch({ key: filter, initializedFn: () => initialized() });
  } catch (err) {
    throw toStoreError(err, what);
  }
  const drain = (async () => {
    for await (const e of iter) latest.set(e.key, e);
  })();
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    ready.then(() => false),
    drain.then(() => false),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeoutMs))),
  ]);
  clearTimeout(timer);
  iter.stop();
  await drain.catch(() => {});
  if (timedOut)
    throw new StoreError('UNAVAILABLE', `${what}: no complete answer within ${timeoutMs} ms`);
  const out: T[] = [];
  for (const e of latest.values()) if (e.operation === 'PUT') out.push(decodeJson(e, parse));
  return out;
}
