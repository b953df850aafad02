import {
  appendSubject,
  userEventsSubject,
  userInboxPrefix,
  type MemberRecord,
} from '@sealbus/protocol';

/** Never matches a real subject: room subjects cannot start with `_`. */
export const NO_PUBLISH = '_SEALBUS_NO_PUBLISH';

export interface SubjectPermissions {
  pub: { allow: string[]; deny: string[] };
  sub: { allow: string[]; deny: string[] };
}

/**
 * A user's data-plane permissions, derived from its memberships only. The
 * invariant: nothing here lets the server publish anything on the user's
 * behalf outside the user's own inbox prefix.
 * - ephemeral room: writer/owner publish + subscribe on the room subject;
 *   reader subscribe (no stream captures it, so a reply subject given with a
 *   publish reaches only the room's subscribers' handlers, never the server);
 * - persisted room: no grant on its subject at all (a stream captures it,
 *   and JetStream answers every publish onto its reply subject). Writers
 *   publish to the append service (`sealbus.append.<room>`, answered on
 *   their inbox); everyone reads through the consumer the daemon made, which
 *   delivers under the member's inbox prefix;
 * - its own inbox prefix (subscribe) and its own events subject;
 * - no `$JS.>` API, ack or flow-control subject, ever.
 * Allow lists are never empty: an empty list means "everything" to NATS.
 */
export function permissionsFor(
  signPub: string,
  memberships: readonly MemberRecord[]
): SubjectPermissions {
  const pub = new Set<string>();
  const sub = new Set<string>([`${userInboxPrefix(signPub)}.>`, userEventsSubject(signPub)]);
  for (const m of memberships) {
    const writes = m.role === 'owner' || m.role === 'writer';
    if (m.persist) {
      if (writes) pub.add(appendSubject(m.room));
    } else {
      sub.add(m.subject);
      if (writes) pub.add(m.subject);
    }
  }
  if (pub.size === 0) pub.add(NO_PUBLISH);
  return { pub: { allow: [...pub].sort(), deny: [] }, sub: { allow: [...sub].sort(), deny: [] } };
}
