import type { NewUser, UserRecord } from '@sealbus/protocol';
import type { MembershipStore } from '@sealbus/store';
import type { Change } from '../dataplane/reactor.js';

type Detail = Record<string, string | number | boolean | null>;

/**
 * What an edge (a signed HTTP request, the node's CLI) supplies to a change:
 * how it records it in the audit log (the edge decides what a failed append
 * means to its caller: 503 for HTTP, "applied but not audited" for the CLI)
 * and how it tells the data plane. The order — store, record, announce — is
 * the use case's, the same from every edge.
 */
export interface ChangeEdge {
  store: MembershipStore;
  record: (action: string, target: string, detail: Detail) => Promise<void>;
  announce: (change: Change) => Promise<void>;
}

/** Registers a user (create-only; CONFLICT leaves the row untouched) and records it. */
export async function addUser(edge: ChangeEdge, input: NewUser): Promise<UserRecord> {
  const user = await edge.store.addUser(input);
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
  const r = await edge.store.revokeUser(signPub);
  if (r.changed) {
    await edge.record('user.revoke', signPub, { handle: r.user.handle });
    await edge.announce({ type: 'user.revoked', sign_pub: signPub });
    await markRoomsForRekey(edge, signPub);
  }
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
