import { StoreError } from '@sealbus/store';
import type { z } from 'zod';
import {
  memberIsOwner,
  membershipInForce,
  parseOrThrow,
  userIsActiveAdmin,
  type MemberRecord,
  type RoomRecord,
  type UserRecord,
} from '@sealbus/protocol';
import type { MembershipStore } from '@sealbus/store';
import type { Change } from '../dataplane/reactor.js';
import type { ChangeEdge } from '../usecases/users.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { AppContext } from './context.js';
import { HttpError } from './errors.js';
import type { DenialBudget } from './denials.js';
import type { BlobLimits } from './routes/blobs.js';

/** What route handlers work with. */
export interface Services {
  store: MembershipStore;
  logger: Logger;
  announce: (change: Change) => Promise<void>;
  /** Rooms one user may own; `POST /rooms` beyond it is 403 ROOM_QUOTA. */
  maxRoomsPerUser: number;
  metrics?: Pick<Metrics, 'auditAppend' | 'blobBytes'>;
  /** Blob limits; the blob routes answer 404 without them. */
  blobs?: BlobLimits;
  /** How many refusals per signer reach the audit log (none budgeted when absent). */
  denials?: DenialBudget;
}

/**
 * Tells the data plane about a change that is already stored and audited.
 * Best effort: if it cannot be sent, the issued JWTs' short lifetime still
 * bounds how long stale permissions live, and the failure is logged.
 */
export async function tellDataPlane(s: Services, c: AppContext, change: Change): Promise<void> {
  try {
    await s.announce(change);
  } catch (err) {
    s.logger.error(
      { request_id: c.get('requestId'), change, err: (err as Error).message },
      'could not announce a change'
    );
  }
}

type Detail = Record<string, string | number | boolean | null>;

/** A signed request as the edge of a use case: audited (503 if not), announced best effort. */
export function httpEdge(s: Services, c: AppContext): ChangeEdge {
  return {
    store: s.store,
    intend: (action, target, detail) => intend(s, c, action, target, detail),
    // The app's error handler records the failure of a change whose intent is on the log.
    failed: async () => {},
    record: (action, target, detail) => audit(s, c, action, target, 'ok', detail),
    announce: (change) => tellDataPlane(s, c, change),
  };
}

/** How long an outcome record is retried (its change is already made). */
const OUTCOME_RETRY_MS = 5_000;

/** Appends one audit record of this request. */
async function appendRecord(
  s: Services,
  c: AppContext,
  action: string,
  target: string | null,
  outcome: 'ok' | 'denied' | 'error' | 'intent',
  detail: Detail | undefined
): Promise<void> {
  await s.store.audit.append(
    {
      time: new Date().toISOString(),
      request_id: c.get('requestId'),
      ...(c.get('clientRequestId') !== undefined
        ? { client_request_id: c.get('clientRequestId') }
        : {}),
      actor: c.get('actor')?.sign_pub ?? null,
      via: 'http',
      action,
      target,
      outcome,
      ...(detail ? { detail } : {}),
    },
    // An outcome rides out a stream leader election (its change is made);
    // one message id across the retries, so the log holds it once.
    outcome === 'ok' || outcome === 'error' ? { retryForMs: OUTCOME_RETRY_MS } : {}
  );
}

/**
 * Records that this request is about to change state (`intent`), before it
 * does: a change is never made unless it is on the record. If the audit log
 * cannot be written, nothing is changed (503 `AUDIT_UNAVAILABLE`; 507
 * `STORAGE_FULL` when storage is full). The
 * change's `ok` record follows; if the request fails instead, the error
 * handler records `error` (best effort: the intent is there either way).
 */
export async function intend(
  s: Services,
  c: AppContext,
  action: string,
  target: string | null,
  detail?: Detail
): Promise<void> {
  try {
    await appendRecord(s, c, action, target, 'intent', detail);
    s.metrics?.auditAppend('ok');
  } catch (err) {
    s.metrics?.auditAppend('error');
    s.logger.error(
      { request_id: c.get('requestId'), action, target, err: (err as Error).message },
      'audit append failed'
    );
    // A full disk is not an outage to wait out or fail over from.
    if (err instanceof StoreError && err.code === 'FULL')
      throw new HttpError(
        507,
        'STORAGE_FULL',
        'storage is full: the audit log cannot be written, so nothing was changed'
      );
    throw new HttpError(
      503,
      'AUDIT_UNAVAILABLE',
      'the audit log cannot be written, so nothing was changed; try again later'
    );
  }
  c.set('auditIntent', { action, target });
}

/**
 * Appends an audit record for this request. For a state change (`ok`) a
 * failed append fails the request with 503: a change is never reported as
 * done unless it is on the record. Denials are recorded best-effort (the
 * denial stands either way) and within each signer's budget (`denials`).
 */
export async function audit(
  s: Services,
  c: AppContext,
  action: string,
  target: string | null,
  outcome: 'ok' | 'denied' | 'error',
  detail?: Detail
): Promise<void> {
  if (outcome === 'denied' && s.denials) {
    const budget = s.denials.take(c.get('actor')?.sign_pub ?? 'anonymous');
    if (!budget) return; // counted; the signer's next record says how many
    if (budget.suppressed > 0) detail = { ...detail, suppressed: budget.suppressed };
  }
  try {
    await appendRecord(s, c, action, target, outcome, detail);
    s.metrics?.auditAppend('ok');
    if (outcome === 'ok') c.set('auditIntent', undefined);
  } catch (err) {
    s.metrics?.auditAppend('error');
    s.logger.error(
      { request_id: c.get('requestId'), action, target, err: (err as Error).message },
      'audit append failed'
    );
    if (outcome === 'ok') {
      // The change is made and its intent is on the record; its outcome is
      // not. Not a 503: that would read as "nothing changed" and send the
      // client on to another node to do it again.
      c.set('auditIntent', undefined);
      throw new HttpError(
        500,
        'AUDIT_OUTCOME_UNRECORDED',
        'the change was made and its intent is on the audit log, but its outcome could not be recorded'
      );
    }
  }
}

export function requireActor(c: AppContext): UserRecord {
  const actor = c.get('actor');
  if (!actor)
    throw new HttpError(
      401,
      'UNAUTHENTICATED',
      'a signed request from a registered key is required'
    );
  return actor;
}

/**
 * Default-deny admin gate: passes only a signer the store confirmed, during
 * this request, as an active admin. Anyone else gets 403 and the attempt is
 * audited; the handler never runs.
 */
export async function requireAdmin(
  s: Services,
  c: AppContext,
  action: string,
  target: string | null
): Promise<UserRecord> {
  const actor = requireActor(c);
  if (userIsActiveAdmin(actor, Date.now())) return actor;
  await audit(s, c, action, target, 'denied', { reason: 'not an admin' });
  throw new HttpError(403, 'FORBIDDEN', 'this route is for admins');
}

/**
 * Loads a room and the signer's membership in it. Non-members get 403
 * (audited when `action` names a change); `owner: true` also requires the
 * owner role.
 */
export async function requireMembership(
  s: Services,
  c: AppContext,
  roomId: string,
  gate: { action: string; owner?: boolean }
): Promise<{ room: RoomRecord; me: MemberRecord }> {
  const actor = requireActor(c);
  const room = await s.store.rooms.get(roomId);
  if (!room) throw new HttpError(404, 'NOT_FOUND', `room ${roomId} not found`);
  const me = await s.store.rooms.membership(roomId, actor.sign_pub);
  if (!me) {
    if (gate.owner) await audit(s, c, gate.action, roomId, 'denied', { reason: 'not a member' });
    throw new HttpError(403, 'NOT_A_MEMBER', 'you are not a member of this room');
  }
  const now = Date.now();
  if (!membershipInForce(actor, me, now)) {
    if (gate.owner)
      await audit(s, c, gate.action, roomId, 'denied', { reason: 'membership expired' });
    throw new HttpError(403, 'MEMBERSHIP_EXPIRED', `your membership ended at ${me.expires_at}`);
  }
  if (gate.owner && !memberIsOwner(actor, me, now)) {
    await audit(s, c, gate.action, roomId, 'denied', { reason: 'not the owner' });
    throw new HttpError(403, 'NOT_OWNER', 'only the room owner may do this');
  }
  return { room, me };
}

/** Parses the (already digest-checked) raw body as JSON through a schema. */
export function readJson<S extends z.ZodType>(c: AppContext, schema: S): z.output<S> {
  const body = c.get('rawBody');
  const type = c.req.header('content-type') ?? '';
  if (!/^application\/json\s*(;|$)/i.test(type)) {
    throw new HttpError(415, 'UNSUPPORTED_MEDIA_TYPE', 'the body must be application/json');
  }
  let raw: unknown;
  try {
    raw = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(body));
  } catch {
    throw new HttpError(400, 'BAD_JSON', 'the body is not valid JSON');
  }
  return parseOrThrow(schema, raw);
}

/** A path parameter validated by a schema (400 on a malformed id or key). */
export function param<S extends z.ZodType>(c: AppContext, name: string, schema: S): z.output<S> {
  return parseOrThrow(schema, c.req.param(name), name);
}
