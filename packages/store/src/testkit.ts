import { createHash, randomBytes } from 'node:crypto';
import {
  ed25519PublicFromSeed,
  roomStatementHash,
  signRoomStatement,
  toHex,
} from '@sealbus/crypto';
import {
  canonicalStatement,
  nextStatement,
  parseStatement,
  type MemberRole,
  type RoomPolicy,
  type RoomRecord,
  type SignedStatement,
} from '@sealbus/protocol';
import type { MembershipStore } from './store.js';

/**
 * For tests of the store: real Ed25519 keys numbered 0..255 (the seed is
 * the number repeated) and the owner statements every change needs,
 * written as an owner's SDK would (tests of the statements themselves
 * build theirs by hand).
 */
export const testSeed = (n: number): Uint8Array => new Uint8Array(32).fill(n);
const pubs = new Map<string, number>();
export function testKey(n: number): string {
  const pub = toHex(ed25519PublicFromSeed(testSeed(n)));
  pubs.set(pub, n);
  return pub;
}

function seedOf(pub: string): Uint8Array {
  const n = pubs.get(pub);
  if (n === undefined) throw new Error(`testkit: ${pub} is not a testKey`);
  return testSeed(n);
}

/** A stand-in key commitment (the store never sees keys): derived from the sealed key. */
const commitment = (s: string) => createHash('sha256').update(s).digest('hex');

export function signedBy(
  owner: string,
  statement: ReturnType<typeof nextStatement>
): SignedStatement {
  const text = canonicalStatement(statement);
  return { statement: text, sig: signRoomStatement(seedOf(owner), text) };
}

/** The store's room changes with the owner's statement made for each. */
export function withStatements(store: MembershipStore) {
  const next = async (
    room: RoomRecord,
    f: (members: Map<string, MemberRole>) => void,
    epoch?: number,
    key?: string
  ): Promise<SignedStatement> => {
    const head = await store.rooms.head(room.id);
    if (!head) throw new Error('testkit: no head');
    const prev = parseStatement(head.statement);
    const members = new Map(prev.members);
    f(members);
    return signedBy(
      room.owner,
      nextStatement(
        { statement: prev, hash: roomStatementHash(head.statement) },
        {
          room: room.id,
          subject: room.subject,
          policy: room.policy,
          owner: room.owner,
          epoch: epoch ?? prev.epoch,
          key_commitment: room.policy.encrypt
            ? key
              ? commitment(key)
              : prev.key_commitment
            : null,
          members,
        }
      )
    );
  };
  return {
    create(input: { subject: string; policy: RoomPolicy; owner: string; sealedKey?: string }) {
      const id = randomBytes(12).toString('hex');
      const statement = signedBy(
        input.owner,
        nextStatement(null, {
          room: id,
          subject: input.subject,
          policy: input.policy,
          owner: input.owner,
          epoch: 0,
          key_commitment: input.policy.encrypt ? commitment(input.sealedKey ?? 'none') : null,
          members: [[input.owner, 'owner']],
        })
      );
      return store.rooms.create({ ...input, id, statement });
    },
    async addMember(
      room: RoomRecord,
      input: {
        signPub: string;
        role: 'writer' | 'reader';
        sealedKey?: string;
        addedBy: string;
        expiresAt?: string | null;
      }
    ) {
      const statement = await next(room, (m) => m.set(input.signPub, input.role));
      return store.rooms.addMember(room, { ...input, statement });
    },
    async removeMember(room: RoomRecord, signPub: string) {
      const statement = await next(room, (m) => m.delete(signPub));
      return store.rooms.removeMember(room, signPub, statement);
    },
    async rekey(id: string, epoch: number, sealed: Record<string, string>, inactive?: Set<string>) {
      const room = await store.rooms.get(id);
      if (!room) throw new Error('testkit: no room');
      const statement = await next(
        room,
        (m) => {
          for (const k of [...m.keys()]) if (!(k in sealed)) m.delete(k);
          for (const k of Object.keys(sealed)) if (!m.has(k)) m.set(k, 'writer');
        },
        epoch,
        Object.values(sealed).join()
      );
      return (await store.rooms.rekey(id, epoch, sealed, statement, inactive)).room;
    },
  };
}
