import type { Context } from 'hono';
import type { HttpBindings } from '@hono/node-server';
import type { UserRecord } from '@sealbus/protocol';

export type AuthMode = 'enforce' | 'soft' | 'off';

/** Per-request values set by middleware. */
export interface AppVariables {
  /** The daemon's id of this request (random; echoed as `x-request-id`). */
  requestId: string;
  /** The client's `X-Request-Id` when recordable (see `clientRequestId`); never trusted. */
  clientRequestId: string | undefined;
  /** The signer as the store knows them; null before auth or when unknown. */
  actor: UserRecord | null;
  /** The raw body bytes, read once and digest-checked before any parsing. */
  rawBody: Uint8Array;
  /**
   * A streamed body's claimed (signed) sha-256, from its Content-Digest; the
   * handler checks it as it reads. Undefined when auth did not verify one.
   */
  bodyDigest: Uint8Array | undefined;
  /** A change whose intent is on the audit log and whose outcome is not yet. */
  auditIntent: { action: string; target: string | null } | undefined;
}

export interface AppEnv {
  Bindings: HttpBindings;
  Variables: AppVariables;
}

export type AppContext = Context<AppEnv>;
