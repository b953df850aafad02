import { z } from 'zod';

/**
 * How an audited request ended. A change is recorded twice: `intent` before
 * it is made (if that record cannot be written, nothing is changed), then
 * `ok` once it is made, or `error` when it failed after its intent; both
 * carry the intent's `request_id`. `denied`: refused before any change.
 */
export const AUDIT_OUTCOMES = Object.freeze(['ok', 'denied', 'error', 'intent'] as const);

/**
 * What a client may send as `X-Request-Id` and have recorded: 1 to 128
 * visible ASCII characters (0x21-0x7e). Anything else is dropped, never
 * truncated (two different ids must not be recorded as the same one).
 */
export const CLIENT_REQUEST_ID_RE = /^[\x21-\x7e]{1,128}$/;

/** The client's `X-Request-Id` when it is recordable, otherwise undefined. */
export function clientRequestId(given: string | undefined | null): string | undefined {
  return given !== undefined && given !== null && CLIENT_REQUEST_ID_RE.test(given)
    ? given
    : undefined;
}

/**
 * One audit record: who did (or tried) what to what, and how it ended.
 * Never carries secrets or sealed keys; `detail` holds only public facts.
 */
export const auditRecordSchema = z.object({
  time: z.string().datetime({ offset: true }),
  /** The daemon's id of the request (or CLI run); never taken from the client. */
  request_id: z.string(),
  /**
   * The `X-Request-Id` the client sent, for correlation only: unverified,
   * not unique, and never used to deduplicate anything.
   */
  client_request_id: z.string().regex(CLIENT_REQUEST_ID_RE).optional(),
  /** The signer's sign_pub, or null (CLI on a node: see `via`). */
  actor: z.string().nullable(),
  /** How the change arrived: `http` or `cli`. */
  via: z.enum(['http', 'cli']),
  action: z.string(),
  target: z.string().nullable(),
  outcome: z.enum(AUDIT_OUTCOMES),
  detail: z.record(z.string(), z.union([z.string(), z.number(), z.boolean(), z.null()])).optional(),
});
export type AuditRecord = z.infer<typeof auditRecordSchema>;
