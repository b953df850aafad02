import {
  appendResultSubject,
  appendSubject,
  memberDeliverSubject,
  roomAnswersGrant,
  roomAnswersInbox,
  userEventsSubject,
  userReplyInboxPrefix,
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
 * - of its own inbox prefix, only what it needs: replies to its own
 *   requests (`<prefix>.r.>`, see `userReplyInboxPrefix`), the append
 *   service's answers (`<prefix>.append.*`) and, per live membership of a
 *   persisted room, that room's deliveries (`<prefix>.room.<id>`); never the
 *   whole prefix, and no wildcard one level below it (nats-server checks a
 *   wildcard subscription as a literal subject, so `<prefix>.*` would admit
 *   `<prefix>.>`). A consumer that outlives a membership (removed, expired,
 *   a cursor reset racing a removal) delivers to a subject its former
 *   member may not subscribe to;
 * - its own events subject;
 * - writers of an ephemeral room: answers to their requests there,
 *   `sealbus.reply.<room>.<me>.*` (subscribe; per room, so only the room's
 *   writers can reach it), and answers to others' requests there,
 *   `sealbus.reply.<room>.*.*` (publish). No NATS response permission (`resp`): it
 *   would let a member publish once to any reply subject another member (or
 *   itself, echoed) put on a message, the JetStream API included;
 * - no `$JS.>` API, ack or flow-control subject, ever.
 * Allow lists are never empty: an empty list means "everything" to NATS.
 */
export function permissionsFor(
  signPub: string,
  memberships: readonly MemberRecord[]
): SubjectPermissions {
  const pub = new Set<string>();
  const sub = new Set<string>([
    `${userReplyInboxPrefix(signPub)}.>`,
    appendResultSubject(signPub, '*'),
    userEventsSubject(signPub),
  ]);
  for (const m of memberships) {
    const writes = m.role === 'owner' || m.role === 'writer';
    if (m.persist) {
      sub.add(memberDeliverSubject(signPub, m.room));
      if (writes) pub.add(appendSubject(m.room));
    } else {
      sub.add(m.subject);
      if (writes) {
        pub.add(m.subject);
        pub.add(roomAnswersGrant(m.room));
        sub.add(roomAnswersInbox(m.room, signPub));
      }
    }
  }
  if (pub.size === 0) pub.add(NO_PUBLISH);
  return {
    pub: { allow: [...pub].sort(), deny: [] },
    sub: { allow: [...sub].sort(), deny: [] },
  };
}
