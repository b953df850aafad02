import { directoryEntrySchema, parseSignPubHex, ValidationError } from '@sealbus/protocol';
import { z } from 'zod';
import { HttpError } from '../errors.js';
import { param, requireActor } from '../guard.js';
import type { RouteDef } from './types.js';

const signPubParam = z.string().transform((v, ctx) => {
  try {
    return parseSignPubHex(v);
  } catch (err) {
    ctx.addIssue({ code: 'custom', message: (err as ValidationError).message });
    return z.NEVER;
  }
});

export const directoryRoutes: RouteDef[] = [
  {
    method: 'get',
    path: '/directory/{sign_pub}',
    summary:
      "An active user's public keys and handle, by exact sign_pub (to seal a room key to them)",
    access: 'signed',
    status: 200,
    response: directoryEntrySchema,
    async handler(c, s) {
      requireActor(c);
      const key = param(c, 'sign_pub', signPubParam);
      const user = await s.store.getUser(key);
      // Revoked and unknown look alike: nobody learns who was revoked.
      if (!user || user.status !== 'active')
        throw new HttpError(404, 'NOT_FOUND', `no active user ${key}`);
      return c.json({
        sign_pub: user.sign_pub,
        kex_pub: user.kex_pub,
        nats_pub: user.nats_pub,
        binding: user.binding,
        bound: user.bound,
        handle: user.handle,
      });
    },
  },
];
