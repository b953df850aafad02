import { checkBinding } from '@sealbus/store';
import {
  newUserSchema,
  parseSignPubHex,
  revokeResponseSchema,
  setMyKeysResponseSchema,
  setMyKeysSchema,
  userResponseSchema,
  usersResponseSchema,
  ValidationError,
} from '@sealbus/protocol';
import { z } from 'zod';
import * as users from '../../usecases/users.js';
import { audit, httpEdge, param, readJson, requireActor, requireAdmin, intend } from '../guard.js';
import type { RouteDef } from './types.js';

const signPubParam = z.string().transform((v, ctx) => {
  try {
    return parseSignPubHex(v);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as ValidationError).message });
    return z.NEVER;
  }
});

export const userRoutes: RouteDef[] = [
  {
    method: 'get',
    path: '/users',
    summary: 'List every user, revoked ones included',
    access: 'admin',
    status: 200,
    response: usersResponseSchema,
    async handler(c, s) {
      await requireAdmin(s, c, 'user.list', null);
      return c.json({ users: await s.store.listUsers() });
    },
  },
  {
    method: 'post',
    path: '/users',
    summary:
      'Register a user (create-only: 409 on an existing key, row untouched): {"public": token} for a bound user, ' +
      '{"sign_pub", "kex_pub"?} for an unbound one; a bad token or binding is 400 BAD_TOKEN / BAD_BINDING',
    access: 'admin',
    body: newUserSchema,
    status: 201,
    response: userResponseSchema,
    async handler(c, s) {
      await requireAdmin(s, c, 'user.add', null);
      const input = readJson(c, newUserSchema);
      const user = await users.addUser(httpEdge(s, c), input);
      return c.json({ user }, 201);
    },
  },
  {
    method: 'post',
    path: '/users/{sign_pub}/revoke',
    summary: 'Revoke a user: a status flip, never a delete',
    access: 'admin',
    status: 200,
    response: revokeResponseSchema,
    async handler(c, s) {
      const target = param(c, 'sign_pub', signPubParam);
      await requireAdmin(s, c, 'user.revoke', target);
      const { user, changed } = await users.revokeUser(httpEdge(s, c), target);
      return c.json({ user, changed });
    },
  },
  {
    method: 'get',
    path: '/me',
    summary: "The signer's own user record",
    access: 'signed',
    status: 200,
    response: userResponseSchema,
    async handler(c) {
      return c.json({ user: requireActor(c) });
    },
  },
  {
    method: 'put',
    path: '/me/keys',
    summary:
      "Complete the signer's own record with kex_pub, nats_pub and their binding (verified against its sign_pub; " +
      '400 BAD_BINDING, 409 when a registered key differs; the same keys again change nothing)',
    access: 'signed',
    body: setMyKeysSchema,
    status: 200,
    response: setMyKeysResponseSchema,
    async handler(c, s) {
      // Self only: the record is the signer's, whatever the body says.
      const me = requireActor(c);
      const keys = readJson(c, setMyKeysSchema);
      // A binding that does not verify is refused before anything is
      // recorded; the same keys again change nothing and record nothing.
      checkBinding({ sign_pub: me.sign_pub, ...keys });
      if (
        me.bound &&
        me.kex_pub === keys.kex_pub &&
        me.nats_pub === keys.nats_pub &&
        me.binding === keys.binding
      )
        return c.json({ user: me, changed: false });
      await intend(s, c, 'user.keys', me.sign_pub, { nats_pub: keys.nats_pub });
      const { user, changed } = await s.store.setUserKeys(me.sign_pub, keys);
      await audit(s, c, 'user.keys', me.sign_pub, 'ok', { nats_pub: user.nats_pub, changed });
      return c.json({ user, changed });
    },
  },
];
