import type { JetStreamClient, JetStreamManager } from 'nats';
import { auditRecordSchema, parseOrThrow, type AuditRecord } from '@sealbus/protocol';
import { StoreError, toStoreError } from './errors.js';

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
    duplicate_window: 120_000_000_000, // 2 min, ns: retries of one append land once
  };
}

const parseRecord = (raw: unknown): AuditRecord => parseOrThrow(auditRecordSchema, raw);

/**
 * The audit log: one JetStream stream, one message per decision, subject
 * `sealbus.audit.<action>` so queries can filter by action server-side.
 */
export class AuditLog {
  readonly #js: JetStreamClient;
  readonly #jsm: JetStreamManager;

  constructor(js: JetStreamClient, jsm: JetStreamManager) {
    this.#js = js;
    this.#jsm = jsm;
  }

  /**
   * Appends one record and resolves once JetStream has stored it (through
   * quorum in a cluster). Deduplicated on request id + action, so a retry
   * after a lost ack does not write twice.
   */
  async append(record: AuditRecord): Promise<number> {
    const rec = parseRecord(record);
    if (!/^[a-z][a-z0-9_.]*[a-z0-9]$/.test(rec.action)) {
      throw new StoreError(
        'INVALID',
        `audit action "${rec.action}" is not a dotted lowercase name`
      );
    }
    try {
      const ack = await this.#js.publish(
        `${AUDIT_SUBJECT_PREFIX}.${rec.action}`,
        enc.encode(JSON.stringify(rec)),
        {
          msgID: `${rec.request_id}:${rec.action}:${rec.outcome}`,
          expect: { streamName: AUDIT_STREAM },
        }
      );
      return ack.seq;
    } catch (err) {
      throw toStoreError(err, 'append audit record');
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

  async #range(from: number, to: number): Promise<AuditRecord[]> {
    const out: AuditRecord[] = [];
    const BATCH = 64;
    for (let s = from; s <= to; s += BATCH) {
      const seqs = Array.from({ length: Math.min(BATCH, to - s + 1) }, (_, i) => s + i);
      const msgs = await Promise.all(
        seqs.map((seq) =>
          this.#jsm.streams.getMessage(AUDIT_STREAM, { seq }).catch((err: unknown) => {
            if (/no message found/i.test((err as Error).message)) return null;
            throw toStoreError(err, 'read audit log');
          })
        )
      );
      for (const m of msgs) {
        if (!m) continue;
        try {
          out.push(parseRecord(JSON.parse(dec.decode(m.data))));
        } catch (err) {
          throw new StoreError('CORRUPT', `audit record ${m.seq} does not parse`, { cause: err });
        }
      }
    }
    return out;
  }
}
