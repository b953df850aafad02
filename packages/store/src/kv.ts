import type { JetStreamManager, KV, KvEntry } from 'nats';
import { StoreError, isWrongLastSequence, toStoreError } from './errors.js';
import type { KvObserver, KvOperation } from './types.js';

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

const OBSERVED: ReadonlySet<string> = new Set<KvOperation>([
  'get',
  'put',
  'create',
  'update',
  'delete',
  'purge',
]);

function tell(observe: KvObserver, bucket: string, op: KvOperation, t0: number, ok: boolean) {
  try {
    observe({ bucket, op, seconds: (performance.now() - t0) / 1000, ok });
  } catch {
    // An observer is never allowed to fail a store operation.
  }
}

/**
 * A view of `kv` whose get/put/create/update/delete/purge report their
 * latency and outcome to `observe`; everything else (watch, status, the
 * fields `listKeys` reads) is the bucket itself. Every read and write of
 * the store goes through views made here, so one wrapper covers them all.
 * Without an observer the bucket is returned as it is (no cost).
 */
export function observeKv(kv: KV, bucket: string, observe: KvObserver | undefined): KV {
  if (!observe) return kv;
  const wrapped = new Map<PropertyKey, unknown>();
  const view = new Proxy(kv, {
    get(target, prop) {
      const value = Reflect.get(target, prop, target) as unknown;
      if (typeof value !== 'function') return value;
      let fn = wrapped.get(prop);
      if (fn) return fn;
      const method = value as (...args: unknown[]) => unknown;
      if (typeof prop === 'string' && OBSERVED.has(prop)) {
        const op = prop as KvOperation;
        fn = async (...args: unknown[]) => {
          const t0 = performance.now();
          try {
            const r = await method.apply(target, args);
            tell(observe, bucket, op, t0, true);
            return r;
          } catch (err) {
            tell(observe, bucket, op, t0, false);
            throw err;
          }
        };
      } else {
        fn = method.bind(target);
      }
      wrapped.set(prop, fn);
      return fn;
    },
  });
  observers.set(view, { bucket, observe });
  return view;
}

/** The observer of views made by `observeKv`, for the multi-call reads below. */
const observers = new WeakMap<KV, { bucket: string; observe: KvObserver }>();

/** Runs a multi-call read (`keys`, `scan`) and reports it like a single operation. */
async function observed<T>(kv: KV, op: KvOperation, fn: () => Promise<T>): Promise<T> {
  const o = observers.get(kv);
  if (!o) return fn();
  const t0 = performance.now();
  try {
    const r = await fn();
    tell(o.observe, o.bucket, op, t0, true);
    return r;
  } catch (err) {
    tell(o.observe, o.bucket, op, t0, false);
    throw err;
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
 * `getLive` for a read that guards a write: a bucket whose stream is
 * electing a leader (a node just died) answers UNAVAILABLE for a few
 * seconds; the read is tried again within `forMs`.
 */
export async function getLiveRetrying(
  kv: KV,
  key: string,
  what: string,
  forMs = 10_000
): Promise<KvEntry | null> {
  const deadline = Date.now() + forMs;
  for (;;) {
    try {
      return await getLive(kv, key, what);
    } catch (err) {
      if ((err as StoreError).code !== 'UNAVAILABLE' || Date.now() >= deadline) throw err;
      await new Promise((r) => setTimeout(r, 250));
    }
  }
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

/** What nats.js keeps on a KV view and does not type: the stream behind it. */
interface BucketInternals {
  jsm: JetStreamManager;
  stream: string;
  prefix: string;
}

/**
 * The keys under a filter, read from the stream leader's subject index
 * (STREAM.INFO with a subjects filter) instead of an ephemeral consumer.
 *
 * Why not `kv.keys()`: its ordered consumer is an R1 consumer the meta leader
 * places on one of the stream's peers, and for a few minutes after a node
 * dies without saying so (SIGKILL, power loss) nats-server 2.10 may still
 * place it on the dead node; the listing then hangs until it times out. A
 * key whose last message is a delete marker is listed too; the per-key get
 * that follows skips it.
 */
export function listKeys(kv: KV, what: string, filter?: string): Promise<string[]> {
  const { jsm, stream, prefix } = kv as unknown as BucketInternals;
  return observed(kv, 'keys', async () => {
    try {
      const si = await jsm.streams.info(stream, { subjects_filter: `${prefix}.${filter ?? '>'}` });
      return Object.keys(si.state.subjects ?? {}).map((subj) => subj.slice(prefix.length + 1));
    } catch (err) {
      throw toStoreError(err, what);
    }
  });
}

/** The live values of the given keys, parsed (64 gets in flight). */
async function getAllLive<T>(
  kv: KV,
  keys: string[],
  parse: (raw: unknown) => T,
  what: string
): Promise<T[]> {
  const out: T[] = [];
  const IN_FLIGHT = 64;
  for (let i = 0; i < keys.length; i += IN_FLIGHT) {
    const batch = await Promise.all(keys.slice(i, i + IN_FLIGHT).map((k) => getLive(kv, k, what)));
    for (const e of batch) if (e) out.push(decodeJson(e, parse));
  }
  return out;
}

/** Every live value of a bucket (optionally under a key filter), parsed. */
export async function readAll<T>(
  kv: KV,
  parse: (raw: unknown) => T,
  what: string,
  filter?: string
): Promise<T[]> {
  return getAllLive(kv, await listKeys(kv, what, filter), parse, what);
}

/** Streams whose consumer-based scans recently failed: until when to skip them. */
const scanDegraded = new Map<string, number>();
const DEGRADED_MS = 60_000;
const PRIMARY_SCAN_MS = 2_000;

/**
 * Every live value under a key filter (wildcards allowed anywhere). Normally
 * one ordered consumer streams them (fast for a thousand rows); if that does
 * not answer within 2 s (or half of `timeoutMs`), the same read is done without a consumer (subject
 * index + a get per key, see `listKeys`), and that bucket keeps using the
 * consumer-free read for a minute. Bounded by `timeoutMs` overall.
 */
export function scan<T>(
  kv: KV,
  filter: string,
  parse: (raw: unknown) => T,
  what: string,
  timeoutMs = 10_000
): Promise<T[]> {
  return observed(kv, 'scan', () => scanUnobserved(kv, filter, parse, what, timeoutMs));
}

async function scanUnobserved<T>(
  kv: KV,
  filter: string,
  parse: (raw: unknown) => T,
  what: string,
  timeoutMs: number
): Promise<T[]> {
  const stream = (kv as unknown as BucketInternals).stream;
  const t0 = Date.now();
  if ((scanDegraded.get(stream) ?? 0) < t0) {
    const rows = await scanByConsumer(
      kv,
      filter,
      parse,
      what,
      Math.min(timeoutMs / 2, PRIMARY_SCAN_MS)
    );
    if (rows) return rows;
    scanDegraded.set(stream, Date.now() + DEGRADED_MS);
  }
  let timer: NodeJS.Timeout | undefined;
  const left = Math.max(500, timeoutMs - (Date.now() - t0));
  try {
    return await Promise.race([
      readAll(kv, parse, what, filter),
      new Promise<never>(
        (_, reject) =>
          (timer = setTimeout(
            () =>
              reject(
                new StoreError('UNAVAILABLE', `${what}: no complete answer within ${timeoutMs} ms`)
              ),
            left
          ))
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** The ordered-consumer scan; null when it did not complete in time (the caller falls back). */
async function scanByConsumer<T>(
  kv: KV,
  filter: string,
  parse: (raw: unknown) => T,
  what: string,
  timeoutMs: number
): Promise<T[] | null> {
  const latest = new Map<string, KvEntry>();
  let initialized!: () => void;
  const ready = new Promise<void>((r) => (initialized = r));
  let stopped = false;
  let iter: Awaited<ReturnType<KV['watch']>> | undefined;
  const run = (async () => {
    const it = await kv.watch({ key: filter, initializedFn: () => initialized() });
    iter = it;
    if (stopped) return it.stop();
    for await (const e of it) latest.set(e.key, e);
  })();
  let timer: NodeJS.Timeout | undefined;
  const outcome = await Promise.race([
    ready.then(() => 'done' as const),
    run.then(
      () => 'done' as const,
      (err: unknown) => err
    ),
    new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), timeoutMs))),
  ]);
  clearTimeout(timer);
  stopped = true;
  iter?.stop();
  if (outcome === 'timeout') {
    void run.catch(() => {});
    return null;
  }
  // Entries already queued in the iterator are still delivered after stop().
  await run.catch(() => {});
  if (outcome !== 'done') {
    const e = toStoreError(outcome, what);
    if (e.code === 'UNAVAILABLE') return null;
    throw e;
  }
  const out: T[] = [];
  for (const e of latest.values()) if (e.operation === 'PUT') out.push(decodeJson(e, parse));
  return out;
}
