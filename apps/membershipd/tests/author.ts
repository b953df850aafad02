import { createHash, randomBytes } from 'node:crypto';
import { type ControlClient } from '@sealbus/client';
import { authorNext, authorStatement, StatementChain } from '@sealbus/client/internal';
import type { Identity } from '@sealbus/crypto';
import type { AddMemberRequest, MemberRole, RoomPolicy, SignedStatement } from '@sealbus/protocol';

/**
 * Raw control-plane calls with the owner statement each change needs, made
 * as the SDK makes them (tests that drive the HTTP API directly). The chain
 * is read back from the daemon and verified; the key commitment is the
 * given key's, or a stand-in when the test seals keys it does not keep.
 */
export function signedCtl(ctl: ControlClient, id: Identity) {
  const chainOf = async (room: string) =>
    StatementChain.fromStatements(room, (await ctl.statements(room)).statements);
  const standIn = (room: string, epoch: number) =>
    new Uint8Array(createHash('sha256').update(`${room}.${epoch}`).digest());
  const next = async (
    room: string,
    f: (m: Map<string, MemberRole>) => void,
    o: { epoch?: number; key?: Uint8Array; signer?: Identity } = {}
  ): Promise<SignedStatement> => {
    const chain = await chainOf(room);
    const members = new Map(chain.members());
    f(members);
    const epoch = o.epoch ?? chain.epoch;
    return authorNext((o.signer ?? id).signSeed, chain, {
      epoch,
      key: chain.policy.encrypt ? (o.key ?? standIn(room, epoch)) : null,
      members,
    });
  };
  return {
    next,
    async createRoom(input: {
      subject: string;
      policy: RoomPolicy;
      sealed_key?: string;
      key?: Uint8Array;
    }) {
      const room = randomBytes(12).toString('hex');
      const statement = authorStatement(id.signSeed, null, {
        room,
        subject: input.subject,
        policy: input.policy,
        owner: id.signPubHex,
        epoch: 0,
        key: input.policy.encrypt ? (input.key ?? standIn(room, 0)) : null,
        members: [[id.signPubHex, 'owner']],
      });
      const { key: _key, ...rest } = input;
      return ctl.createRoom({ ...rest, id: room, statement });
    },
    async addMember(room: string, input: Omit<AddMemberRequest, 'statement'>) {
      const statement = await next(room, (m) => m.set(input.sign_pub, input.role));
      return ctl.addMember(room, { ...input, statement });
    },
    async removeMember(room: string, signPub: string) {
      const statement = await next(room, (m) => m.delete(signPub));
      return ctl.removeMember(room, signPub, { statement });
    },
    async rekey(
      room: string,
      input: { epoch: number; sealed_keys: Record<string, string> },
      key?: Uint8Array
    ) {
      const statement = await next(
        room,
        (m) => {
          for (const k of [...m.keys()]) if (!(k in input.sealed_keys)) m.delete(k);
          for (const k of Object.keys(input.sealed_keys)) if (!m.has(k)) m.set(k, 'writer');
        },
        { epoch: input.epoch, ...(key ? { key } : {}) }
      );
      return ctl.rekey(room, { ...input, statement });
    },
  };
}
