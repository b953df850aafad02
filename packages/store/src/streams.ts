import type { JetStreamManager, MsgRequest, StoredMsg } from 'nats';
import { toStoreError } from './errors.js';

function isNoMessage(err: unknown): boolean {
  return /no message found/i.test((err as Error)?.message ?? '');
}

/**
 * One stored message (by sequence, or the next on a subject from a
 * sequence), or null when there is none: a gap left by a deleted or expired
 * message is not an error. Reads without a consumer (see `listKeys`).
 */
export async function getMessageOrNull(
  jsm: JetStreamManager,
  stream: string,
  req: { seq: number; next_by_subj?: string },
  what: string
): Promise<StoredMsg | null> {
  try {
    // nats.js types next_by_subj for direct gets only; STREAM.MSG.GET takes it too.
    return await jsm.streams.getMessage(stream, req as unknown as MsgRequest);
  } catch (err) {
    if (isNoMessage(err)) return null;
    throw toStoreError(err, what);
  }
}

/** Messages `from`..`to` by sequence, all in flight at once, in order (null for a gap). */
export function getMessages(
  jsm: JetStreamManager,
  stream: string,
  from: number,
  to: number,
  what: string
): Promise<Array<StoredMsg | null>> {
  return Promise.all(
    Array.from({ length: to - from + 1 }, (_, i) =>
      getMessageOrNull(jsm, stream, { seq: from + i }, what)
    )
  );
}
