import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { JetStreamClient, JetStreamManager, PubAck, StoredMsg } from 'nats';
import { auditRecordSchema, parseOrThrow, type AuditRecord } from '@sealbus/protocol';
import { StoreError, toStoreError } from './errors.js';
import { getMessageOrNull, getMessages } from './streams.js';
import type { AuditAppendOptions, AuditQuery, AuditQueryResult } from './types.js';

export const AUDIT_STREAM = 'SEALBUS_AUDIT';
export const AUDIT_SUBJECT_PREFIX = 'sealbus.audit';

const enc = new TextEncoder();
const dec = new TextDecoder();

export function auditStreamConfig(replicas: number) {
  return {
    name: AUDIT_STREAM,
    description: 'append-only audit log of control-plane decisions',
    subjects: [`${AUDIT_SUBJECT_PREFIX}.>`],
    num_replicas: replicas,
    // History is evidence: nobody deletes or purges single records.
    deny_delete: true,
    deny_purge: true,
    duplicate_window: 120_000_000_000, // 2 min, ns: retries of one append (same daemon-made id) land once
  };
}

const parseRecord = (raw: unknown): AuditRecord => parseOrThrow(auditRecordSchema, raw);

/** An action name, or a prefix of them ending in `.*`. */
const ACTION_FILTER_RE = /^[a-z][a-z0-9_]*(\.[a-z0-9_]+)*(\.\*)?$/;
/**
 * How far a record's own `time` (its writer's clock) may lie from the time
 * the stream stored it: the start and stop, found by stored time (which
 * only grows), are widened by this much, and records then filtered by
 * `time`.
 */
const CLOCK_SLACK_MS = 30_000;
const DEFAULT_QUERY_LIMIT = 100;
const BATCH = 64;

/** The stream subject(s) holding `action`: `room.*` is every action under `room.`. */
export function auditSubjectFilter(action: string): string {
  if (!ACTION_FILTER_RE.test(action)) {
    throw new StoreError(
      'INVALID',
      `action "${action}" is neither an action name (user.add) nor a prefix (room.*)`
    );
  }
  return `${AUDIT_SUBJECT_PREFIX}.${action.endsWith('.*') ? `${action.slice(0, -2)}.>` : action}`;
}

/**
 * The audit log: one JetStream stream, one message per decision, subject
 * `sealbus.audit.<action>` so queries can filter by action server-side.
 */
export class AuditLog {
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;

  readonly #newMessageId: () => string;

  /**
   * `newMessageId` is a test seam only (to provoke a duplicate ack); the
   * store never passes one.
   */
  constructor(
    js: JetStreamClient,
    jsm: JetStreamManager,
    options: { newMessageId?: () => string } = {}
  ) {
    this.#js = js;
    this.#jsm = jsm;
    this.#newMessageId = options.newMessageId ?? (() => randomBytes(16).toString('hex'));
  }

  /**
   * Appends one record and resolves once JetStream has stored it (through
   * quorum in a cluster), with its stream sequence.
   *
   * The JetStream message id (`Nats-Msg-Id`) is generated here, random per
   * append, and kept only across the retries of this one append: a retry
   * after a lost ack lands once, and nothing a client sends (its
   * `X-Request-Id` included) can make two records collapse into one. A
   * duplicate ack on the first attempt means someone else wrote under that
   * id: the record was not stored, and that is an error (CONFLICT), never a
   * silent success. On a retry, a duplicate ack is this append's own first
   * attempt and counts as stored.
   *
   * @example
   * await store.audit.append(record, { retryForMs: 15_000 }); // ride out a leader election
   */
  async append(record: AuditRecord, options: AuditAppendOptions = {}): Promise<number> {
    const rec = parseRecord(record);
    if (!/^[a-z][a-z0-9_.]*[a-z0-9]$/.test(rec.action)) {
      throw new StoreError(
        'INVALID',
        `audit action "${rec.action}" is not a dotted lowercase name`
      );
    }
    const msgID = this.#newMessageId();
    const data = enc.encode(JSON.stringify(rec));
    const deadline = Date.now() + (options.retryForMs ?? 0);
    for (let attempt = 1; ; attempt++) {
      let ack: PubAck;
      try {
        ack = await this.#js.publish(`${AUDIT_SUBJECT_PREFIX}.${rec.action}`, data, {
          msgID,
          expect: { streamName: AUDIT_STREAM },
        });
      } catch (err) {
        const e = toStoreError(err, 'append audit record');
        const left = deadline - Date.now();
        if (e.code !== 'UNAVAILABLE' || left <= 0) throw e;
        await sleep(Math.min(left, 100 * 2 ** Math.min(attempt - 1, 3)));
        continue;
      }
      if (ack.duplicate && attempt === 1) {
        throw new StoreError(
          'CONFLICT',
          `append audit record: message id ${msgID} was already taken (duplicate ack on the first attempt); the record was not stored`
        );
      }
      return ack.seq;
    }
  }

  /** The last `n` records, oldest first. */
  async tail(n: number): Promise<AuditRecord[]> {
    let first: number;
    let last: number;
    try {
      const info = await this.#jsm.streams.info(AUDIT_STREAM);
      first = info.state.first_seq;
      last = info.state.last_seq;
      if (info.state.messages === 0) return [];
    } catch (err) {
      throw toStoreError(err, 'read audit log');
    }
    const from = Math.max(first, last - n + 1);
    return this.#range(from, last);
  }

  /**
   * The records matching every given filter, oldest first, at most `limit`
   * (the oldest ones; `truncated` says whether more match). No consumer is
   * created (see `listKeys` in kv.ts for why): `since` is found by a binary
   * search over stream sequence numbers by the time each was stored, an
   * action is read with next-by-subject gets (the server skips other
   * actions), anything else with batches of gets by sequence. The scan
   * stops at `until`, at the stream's last message when the query began, or
   * once `limit` + 1 records matched.
   *
   * @example
   * const { records } = await store.audit.query({ action: 'user.*', since: Date.now() - 86_400_000 });
   */
  async query(q: AuditQuery = {}): Promise<AuditQueryResult<AuditRecord>> {
    const limit = q.limit ?? DEFAULT_QUERY_LIMIT;
    if (!Number.isSafeInteger(limit) || limit < 1)
      throw new StoreError('INVALID', 'limit must be a positive integer');
    if (q.actor !== undefined && !/^[0-9a-f]{64}$/.test(q.actor))
      throw new StoreError('INVALID', 'actor must be a sign_pub (64 lowercase hex)');
    for (const [name, t] of [
      ['since', q.since],
      ['until', q.until],
    ] as const) {
      if (t !== undefined && !Number.isFinite(t))
        throw new StoreError('INVALID', `${name} is not a time`);
    }
    if (q.since !== undefined && q.until !== undefined && q.since > q.until)
      throw new StoreError('INVALID', 'since is after until');
    const subject = q.action !== undefined ? auditSubjectFilter(q.action) : undefined;

    const overdue = () => {
      if (q.deadline !== undefined && Date.now() > q.deadline)
        throw new StoreError('UNAVAILABLE', 'audit query: the scan did not finish in time');
    };
    let first: number;
    let last: number;
    try {
      const info = await this.#jsm.streams.info(AUDIT_STREAM);
      if (info.state.messages === 0) return { records: [], truncated: false };
      first = info.state.first_seq;
      last = info.state.last_seq;
    } catch (err) {
      throw toStoreError(err, 'read audit log');
    }
    let seq =
      q.since === undefined
        ? first
        : await this.#firstSeqAtOrAfter(q.since - CLOCK_SLACK_MS, first, last, overdue);
    const stopAfter = q.until === undefined ? Infinity : q.until + CLOCK_SLACK_MS;
    const records: AuditRecord[] = [];
    const newest = q.newest ?? false;
    let dropped = false;
    const matches = (r: AuditRecord) => {
      const t = Date.parse(r.time);
      return (
        (q.since === undefined || t >= q.since) &&
        (q.until === undefined || t <= q.until) &&
        (q.actor === undefined || r.actor === q.actor) &&
        (q.outcome === undefined || r.outcome === q.outcome) &&
        (q.via === undefined || r.via === q.via)
      );
    };
    while (seq <= last && (newest || records.length <= limit)) {
      overdue();
      const msgs = subject
        ? [await this.#get({ seq, next_by_subj: subject })].filter((m) => m !== null)
        : (await this.#batch(seq, Math.min(last, seq + BATCH - 1))).filter((m) => m !== null);
      if (subject && msgs.length === 0) break;
      let past = false;
      for (const m of msgs) {
        if (m.seq > last || storedAt(m) > stopAfter) {
          past = true;
          break;
        }
        const r = this.#decode(m);
        if (!matches(r)) continue;
        records.push(r);
        if (records.length <= limit) continue;
        if (!newest) break;
        records.shift(); // a window of the newest `limit` matches
        dropped = true;
      }
      if (past) break;
      seq = subject ? msgs[0]!.seq + 1 : Math.min(last, seq + BATCH - 1) + 1;
    }
    if (newest) return { records, truncated: dropped };
    const truncated = records.length > limit;
    return { records: truncated ? records.slice(0, limit) : records, truncated };
  }

  /**
   * The first sequence stored at or after `t` (epoch ms; see `storedAt`);
   * `last + 1` if none. Stored times only grow along the stream, whatever
   * the writers' clocks say (a record's own time is filtered on, never
   * searched or stopped on).
   */
  async #firstSeqAtOrAfter(
    t: number,
    first: number,
    last: number,
    overdue: () => void
  ): Promise<number> {
    let lo = first;
    let hi = last + 1;
    while (lo < hi) {
      overdue();
      const mid = lo + Math.floor((hi - lo) / 2);
      // deny_delete keeps the stream gapless; a gap is skipped all the same.
      const m =
        (await this.#get({ seq: mid })) ??
        (await this.#get({ seq: mid, next_by_subj: `${AUDIT_SUBJECT_PREFIX}.>` }));
      if (!m || m.seq >= hi) {
        hi = mid;
      } else if (storedAt(m) < t) {
        lo = m.seq + 1;
      } else {
        hi = mid;
      }
    }
    return lo;
  }

  /** One message, or null when there is none (at that sequence, or after it for the subject). */
  #get(req: { seq: number; next_by_subj?: string }): Promise<StoredMsg | null> {
    return getMessageOrNull(this.#jsm, AUDIT_STREAM, req, 'read audit log');
  }

  /** Messages `from`..`to` by sequence, `BATCH` in flight, in order (null for a gap). */
  #batch(from: number, to: number): Promise<Array<StoredMsg | null>> {
    return getMessages(this.#jsm, AUDIT_STREAM, from, to, 'read audit log');
  }

  #decode(m: StoredMsg): AuditRecord {
    try {
      return parseRecord(JSON.parse(dec.decode(m.data)));
    } catch (err) {
      throw new StoreError('CORRUPT', `audit record ${m.seq} does not parse`, { cause: err });
    }
  }

  async #range(from: number, to: number): Promise<AuditRecord[]> {
    const out: AuditRecord[] = [];
    for (let s = from; s <= to; s += BATCH) {
      for (const m of await this.#batch(s, Math.min(to, s + BATCH - 1)))
        if (m) out.push(this.#decode(m));
    }
    return out;
  }
}

/**
 * Header a restore puts on each message: when the original was stored
 * (ISO 8601). JetStream stamps a restored message with the restore's time;
 * this keeps the original, for queries by time and for the next backup.
 */
export const STORED_AT_HEADER = 'Sealbus-Stored-At';

/** When a message was first stored: the restore's header if it has one, else JetStream's time. */
export function storedAt(m: { time: Date; header?: { get(k: string): string } }): number {
  const h = m.header?.get(STORED_AT_HEADER);
  const t = h ? Date.parse(h) : NaN;
  return Number.isFinite(t) ? t : m.time.getTime();
}
