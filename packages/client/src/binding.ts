import { fromHex, publicIdentityOf, verifyKeyBinding, type Identity } from '@sealbus/crypto';
import type { UserRecord } from '@sealbus/protocol';
import type { ControlClient } from './control.js';
import { ControlError } from './errors.js';

type Keys = Pick<UserRecord, 'sign_pub' | 'kex_pub' | 'nats_pub' | 'binding'>;

/** True when a record's binding is sign_pub's signature over its kex_pub and nats_pub. */
export function bindingVerifies(k: Keys): boolean {
  if (k.kex_pub === null || k.nats_pub === null || k.binding === null) return false;
  try {
    return verifyKeyBinding(
      {
        signPub: fromHex(k.sign_pub, 'sign_pub', 32),
        kexPub: fromHex(k.kex_pub, 'kex_pub', 32),
        natsPub: fromHex(k.nats_pub, 'nats_pub', 32),
      },
      fromHex(k.binding, 'binding', 64)
    );
  } catch {
    return false;
  }
}

/** The directory holds this identity's keys with a binding that verifies here. */
function bindsIdentity(me: UserRecord, id: Identity): boolean {
  return (
    me.bound &&
    me.sign_pub === id.signPubHex &&
    me.kex_pub === id.kexPubHex &&
    me.nats_pub === id.natsPubHex &&
    bindingVerifies(me)
  );
}

/**
 * Makes sure the directory binds this identity's kex and NATS keys before
 * the client connects to NATS with the derived key: reads `GET /me` and,
 * unless the record already holds a binding that verifies locally, sends
 * `PUT /me/keys`. A control plane that does not answer at all is not fatal
 * (the NATS connect then tells: a bound user is admitted, an unbound one is
 * not); a refusal (401, 409: a different key registered) is thrown.
 */
export async function ensureBound(
  control: ControlClient,
  id: Identity
): Promise<UserRecord | null> {
  let me: UserRecord;
  try {
    me = await control.me();
  } catch (err) {
    if (err instanceof ControlError && err.code === 'UNAVAILABLE') return null;
    throw err;
  }
  if (bindsIdentity(me, id)) return me;
  const p = publicIdentityOf(id);
  const { user } = await control.setMyKeys({
    kex_pub: p.kexPubHex,
    nats_pub: p.natsPubHex,
    binding: p.bindingHex,
  });
  if (!bindsIdentity(user, id)) {
    throw new ControlError(
      0,
      'BAD_RESPONSE',
      'PUT /me/keys: the control plane answered with a record that does not bind this identity'
    );
  }
  return user;
}
