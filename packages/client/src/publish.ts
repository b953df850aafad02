import { randomBytes } from 'node:crypto';
import type { JetStreamClient } from 'nats';
import { PublishError } from './errors.js';

export interface PersistedPublish {
  room: string;
  subject: string;
  frame: Uint8Array;
  /** Give up retrying an unacknowledged frame at this time (epoch ms). */
  deadline: number;
  /** Timeout of one attempt. */
  attemptMs: number;
  /** True once the connection is closed for good (no point retrying). */
  closed: () => boolean;
  /** The frame's message id; default 16 random bytes, hex (a test seam). */
  msgID?: string;
}

/** JetStream's answer to a publish into a stream at its `max_bytes` with discard-new. */
export function isStreamFull(err: unknown): boolean {
  const e = err as { message?: string; api_error?: { description?: string } } | undefined;
  return /maximum bytes exceeded/i.test(`${e?.api_error?.description ?? ''} ${e?.message ?? ''}`);
}

/**
 * Stores one frame in a persisted room's stream. The frame's `Nats-Msg-Id`
 * is random and kept across the retries of this frame only: the stream's
 * duplicate window drops a retry whose first attempt was stored but whose
 * ack was lost, and no other writer can predict the id to pre-empt the
 * frame. A duplicate ack on the first attempt therefore means the frame was
 * NOT stored (DUPLICATE); on a retry it is this frame's own first attempt.
 */
export async function publishPersisted(js: JetStreamClient, p: PersistedPublish): Promise<void> {
  const msgID = p.msgID ?? randomBytes(16).toString('hex');
  for (let attempt = 1, backoff = 100; ; attempt++, backoff = Math.min(1_000, backoff * 2)) {
    try {
      const ack = await js.publish(p.subject, p.frame, { msgID, timeout: p.attemptMs });
      if (ack.duplicate && attempt === 1) {
        throw new PublishError(
          'DUPLICATE',
          p.room,
          `room ${p.room}: the stream already holds a message with this frame's id; the frame was not stored`
        );
      }
      return;
    } catch (err) {
      if (err instanceof PublishError) throw err;
      // JetStream answers a full stream with a 503 like a lost leader: it
      // is checked first, since retrying it cannot help.
      if (isStreamFull(err)) {
        throw new PublishError(
          'ROOM_FULL',
          p.room,
          `room ${p.room} is full (its stream reached its size limit); history is kept, new messages are refused`,
          { cause: err }
        );
      }
      const transient = /timeout|no responders|503/i.test(
        `${(err as { code?: string }).code ?? ''} ${(err as Error).message}`
      );
      if (!transient || p.closed() || Date.now() + backoff > p.deadline) throw err;
      await new Promise((r) => setTimeout(r, backoff));
    }
  }
}
