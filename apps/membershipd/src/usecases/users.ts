import type { NewUser, UserRecord } from '@sealbus/protocol';
import { resolveNewUser, type MembershipStore } from '@sealbus/store';
import type { Change } from '../dataplane/reactor.js';

type Detail = Record<string, string | number | boolean | null>;

/**
 * What an edge (a signed HTTP request, the node's CLI) supplies to a change:
 * how it records it in the audit log and how it tells the data plane. The
 * order — intent, store, outcome, announce — is the use case's, the same
 * from every edge: a change is on the audit log before it is made (an
 * intent that cannot be written means nothing is changed: 503
 * `AUDIT_UNAVAILABLE` over HTTP, exit 1 from the CLI), and its outcome
 * follows.
 */
export interface ChangeEdge {
  store: MembershipStore;
  /** Records the change about to be made; throws (and nothing is changed) when it cannot. */
  intend: (action: string, target: string | null, detail?: Detail) => Promise<void>;
  record: (action: string, target: string, detail: Detail) => Promise<void>;
  /** Records (best effort) that a change whose intent is on the log failed. */
  failed: (action: string, target: string | null, err: unknown) => Promise<void>;
  announce: (change: Change) => Promise<void>;
}

/** The change `make`, its intent recorded first and its failure, if it fails, after. */
async function attempt<T>(
  edge: ChangeEdge,
  action: string,
  target: string,
  detail: Detail,
  make: () => Promise<T>
): Promise<T> {
  await edge.intend(action, target, detail);
  try {
    return await make();
  } catch (err) {
    await edge.failed(action, target, err).catch(() => {});
    throw err;
  }
}

/** Registers a user (create-only; CONFLICT leaves the row untouched) and records it. */
export async function addUser(edge: ChangeEdge, input: NewUser): Promise<UserRecord> {
  // Refused input (a bad token or binding) is refused before anything is
  // recorded or written.
  const resolved = resolveNewUser(input);
  const user = await attempt(edge, 'user.add', resolved.sign_pub, { handle: resolved.handle }, () =>
    edge.store.addUser(input)
  );
  await edge.record('user.add', user.sign_pub, {
    handle: user.handle,
    role: user.role,
    bound: user.bound,
    ...(user.expires_at ? { expires_at: user.expires_at } : {}),
  });
  return user;
}

/**
 * Revokes a user (a status flip, never a delete). Only a real change is
 * recorded and announced: every node then cuts the user's connections and
 * drops what it cached of its grants.
 */
export async function revokeUser(
  edge: ChangeEdge,
  signPub: string
): Promise<{ user: UserRecord; changed: boolean }> {
  const r = await attempt(edge, 'user.revoke', signPub, {}, () => edge.store.revokeUser(signPub));
  // Its effects first (every node cuts the user's connections, encrypted
  // rooms rotate): a revocation whose outcome record fails is still a
  // revocation everywhere. Done again on a repeated revoke, so a retry
  // after such a failure finishes what the first attempt began.
  await edge.announce({ type: 'user.revoked', sign_pub: signPub });
  await markRoomsForRekey(edge, signPub);
  await edge.record('user.revoke', signPub, {
    handle: r.user.handle,
    ...(r.changed ? {} : { changed: false }),
  });
  return r;
}

/**
 * Every encrypted room `signPub` is a member of (not its owner) needs a new
 * key that leaves them out: mark it and tell its owner, whose SDK rotates.
 */
export async function markRoomsForRekey(edge: ChangeEdge, signPub: string): Promise<number> {
  let marked = 0;
  for (const m of await edge.store.rooms.membershipsOf(signPub)) {
    if (m.role === 'owner') continue;
    const room = await edge.store.rooms.get(m.room);
    if (!room || !room.policy.encrypt) continue;
    await edge.store.rooms.markForRekey(room.id);
    await edge.announce({ type: 'rekey.needed', room: room.id, owner: room.owner });
    marked++;
  }
  return marked;
}
