export { ControlClient, type ControlClientOptions } from './control.js';
export {
  ControlError,
  PublishError,
  SealbusError,
  type SealbusErrorCode,
  type ControlAttempt,
  type PublishErrorCode,
} from './errors.js';
export {
  TrustError,
  type EpochInfo,
  type ServedStatement,
  type TrustErrorCode,
  type TrustState,
} from './chain.js';
export { type PossibleLoss, type RejectedFrame, type RoomMessage } from './roomstate.js';
export {
  Sealbus,
  type MessageHandler,
  type MessageStream,
  type RoomSubscription,
  type SealbusEvents,
  type SealbusOptions,
  type SubscribeOptions,
} from './sealbus.js';
// Identity files, so applications need no other Sealbus package.
export {
  encodePublicIdentity,
  fingerprint,
  generateIdentity,
  loadIdentity,
  loadOrCreateIdentity,
  saveIdentity,
  type Identity,
} from '@sealbus/crypto';
export { InsecureTransportError } from './secure.js';
// The shapes the control plane answers with, so applications need no other package.
export type {
  MemberRole,
  MyRoom,
  RoomDetail,
  RoomPolicy,
  RoomStatement,
  SignedStatement,
  UserRecord,
} from '@sealbus/protocol';
// Blob refs (what `publishBlob` sends and `m.blob` carries) and their parser.
export { BLOB_ENVELOPE_KEY } from './blobs.js';
export { parseBlobRef, type BlobData, type BlobRef } from '@sealbus/crypto';
