import {
  CryptoError,
  encodePublicIdentity,
  loadIdentity,
  loadOrCreateIdentity,
  publicIdentityOf,
  type Identity,
} from '@sealbus/crypto';
import { randomUUID } from 'node:crypto';
import { StoreError, type MembershipStore } from '@sealbus/store';
import type { Logger } from '../log.js';

/** How long a bootstrap record is retried (a leader election at start-up). */
const BOOTSTRAP_AUDIT_RETRY_MS = 15_000;

/**
 * A change the daemon makes on its own at start-up, on the audit log like
 * any other (`via: cli`, no actor: the node's operator started it): its
 * intent first, then the change, then its outcome.
 */
async function audited<T>(
  store: MembershipStore,
  action: string,
  target: string,
  detail: Record<string, string | number | boolean | null>,
  make: () => Promise<T>
): Promise<T> {
  const record = (outcome: 'intent' | 'ok' | 'error', extra = {}) =>
    store.audit.append(
      {
        time: new Date().toISOString(),
        request_id,
        actor: null,
        via: 'cli',
        action,
        target,
        outcome,
        detail: { ...detail, by: 'serve (start-up)', ...extra },
      },
      { retryForMs: BOOTSTRAP_AUDIT_RETRY_MS }
    );
  const request_id = `bootstrap-${randomUUID()}`;
  await record('intent');
  let result: T;
  try {
    result = await make();
  } catch (err) {
    await record('error', { code: (err as { code?: string }).code ?? 'INTERNAL' }).catch(() => {});
    throw err;
  }
  await record('ok');
  return result;
}

export interface AdminBootstrap {
  signPub: string;
  path: string;
  /** True only on the start that created the identity file. */
  created: boolean;
}

/**
 * Admin #0: without one admin nobody can sign the first admin request. On
 * the first start of an empty store, create `admin.id` (0600) and register it
 * as an active, bound admin (an unbound admin #0 left by an older version is
 * bound on the next start). The file is written before the user row, so a crash in
 * between is repaired by the next start (the row is added then); a store that
 * already has an active admin (a restored backup, a cluster peer that went
 * first) gets no new admin.
 */
export async function bootstrapAdmin(
  store: MembershipStore,
  path: string,
  logger: Logger
): Promise<AdminBootstrap | null> {
  let identity: Identity | undefined;
  let created = false;
  try {
    identity = await loadIdentity(path);
  } catch (err) {
    if (!(err instanceof CryptoError) || err.code !== 'IDENTITY_NOT_FOUND') throw err;
  }
  if (!identity) {
    if (await store.hasActiveAdmin()) {
      logger.info(
        { admin_identity: path },
        'store already has an active admin; no admin #0 created'
      );
      return null;
    }
    ({ identity, created } = await loadOrCreateIdentity(path));
  }
  const existing = await store.getUser(identity.signPubHex);
  if (!existing) {
    try {
      // Bound from the start: its NATS key is the derived one, never the sign key.
      const admin = identity;
      await audited(
        store,
        'user.add',
        admin.signPubHex,
        { handle: 'admin', role: 'admin', reason: 'admin #0' },
        () => store.addUser({ public: encodePublicIdentity(admin), handle: 'admin', role: 'admin' })
      );
    } catch (err) {
      // A concurrent start registered it first: that is the outcome we wanted.
      if (!(err instanceof StoreError && err.code === 'CONFLICT')) throw err;
    }
  } else if (!existing.bound && existing.status === 'active') {
    // Registered before bindings existed: bind it, as its SDK would at connect.
    const p = publicIdentityOf(identity);
    try {
      const admin = identity;
      await audited(store, 'user.keys', admin.signPubHex, { nats_pub: p.natsPubHex }, () =>
        store.setUserKeys(admin.signPubHex, {
          kex_pub: p.kexPubHex,
          nats_pub: p.natsPubHex,
          binding: p.bindingHex,
        })
      );
      logger.info({ sign_pub: identity.signPubHex }, 'admin #0 bound to its derived NATS key');
    } catch (err) {
      if (!(err instanceof StoreError && err.code === 'CONFLICT')) throw err;
      logger.warn(
        { admin_identity: path, sign_pub: identity.signPubHex, err: err.message },
        'admin #0 could not be bound (left as it is)'
      );
    }
  }
  if (existing && (existing.role !== 'admin' || existing.status !== 'active')) {
    logger.warn(
      {
        admin_identity: path,
        sign_pub: identity.signPubHex,
        role: existing.role,
        status: existing.status,
      },
      'admin.id is not an active admin in the store (left as it is)'
    );
  }
  return { signPub: identity.signPubHex, path, created };
}
