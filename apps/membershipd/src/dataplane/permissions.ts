import {
  memberDurableName,
  roomStreamName,
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
 * A user's data-plane permissions, derived from its memberships only:
 * - writer/owner: publish + subscribe on the room subject; reader: subscribe;
 * - its own inbox prefix (request/reply, JetStream acks and API replies) and
 *   its own events subject;
 * - per persisted room, exactly the three JetStream calls its durable needs
 *   (consumer info, next message, ack) — never consumer create or delete,
 *   stream delete or purge, or any other room's stream.
 * Allow lists are never empty: an empty list means "everything" to NATS.
 */
export function permissionsFor(
  signPub: string,
  memberships: readonly MemberRecord[]
): SubjectPermissions {
  const pub = new Set<string>();
  const sub = new Set<string>([`${userInboxPrefix(signPub)}.>`, userEventsSubject(signPub)]);
  for (const m of memberships) {
    sub.add(m.subject);
    if (m.role === 'owner' || m.role === 'writer') pub.add(m.subject);
    if (m.persist) {
      const stream = roomStreamName(m.room);
      const durable = memberDurableName(signPub);
      pub.add(`$JS.API.CONSUMER.INFO.${stream}.${durable}`);
      pub.add(`$JS.API.CONSUMER.MSG.NEXT.${stream}.${durable}`);
      pub.add(`$JS.ACK.${stream}.${durable}.>`);
    }
  }
  if (pub.size === 0) pub.add(NO_PUBLISH);
  return { pub: { allow: [...pub].sort(), deny: [] }, sub: { allow: [...sub].sort(), deny: [] } };
}
