import { z } from 'zod';

export const AUDIT_OUTCOMES = Object.freeze(['ok', 'denied', 'error'] as const);

/**
 * One audit record: who did (or tried) what to what, and how it ended.
 * Never carries secrets or sealed keys; `detail` holds only public facts.
 */
export const auditRecordSchema = z.object({
  time: z.string(),
  request_id: z.string(),
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
