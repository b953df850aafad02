/**
 * `@sealbus/client/internal`: the SDK's parts that are not its API, for this
 * repository's own tests, benchmarks and tools. Not in the published
 * package's `exports` (npm run sdk:pack leaves it out); anything here may
 * change without notice.
 */
import type { NatsConnection } from 'nats';
import { internals, type Sealbus } from './sealbus.js';

export { newRoomKey, openRoomKey, sealRoomKey } from './keys.js';
export { OwnerPins, StatementChain, authorNext, authorStatement, signStatement } from './chain.js';
export { bindingVerifies, ensureBound } from './binding.js';
export { DEFAULT_ROTATION_GRACE_MS, RoomState, type RoomTrust, type Opened } from './roomstate.js';
export { natsTransport } from './secure.js';
export { LiveConnection, type LiveSubscription } from './conn.js';
export { Appender, PersistedReader, deliveredStreamSeq } from './persisted.js';

/** The raw NATS connection a client uses now (it changes when the client renews it). */
export function natsOf(bus: Sealbus): NatsConnection {
  return internals.natsOf(bus);
}

/** How many times a client renewed its connection make-before-break. */
export function renewalsOf(bus: Sealbus): number {
  return internals.renewalsOf(bus);
}

export { OrderedFrames, VerifyPool } from './verifier.js';
