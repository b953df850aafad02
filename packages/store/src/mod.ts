export {
  StoreError,
  isStorageExhausted,
  isStreamNotFound,
  isUnavailable,
  isWrongLastSequence,
  toStoreError,
  type StoreErrorCode,
} from './errors.js';
export { DEFAULT_NONCE_TTL_MS, bucketSpecs, type BucketId, type BucketSpec } from './buckets.js';
export {
  casUpdate,
  createOnly,
  decodeJson,
  encodeJson,
  getLive,
  observeKv,
  readAll,
  type CasOptions,
  type CasResult,
} from './kv.js';
export { listKeys } from './kv.js';
export { getMessageOrNull, getMessages } from './streams.js';
export { checkBinding, resolveNewUser, userIsActive, type NatsKeyLookup } from './users.js';
export { MembershipStore, withBootstrapRetry } from './store.js';
export { CACHE_CATCH_UP_MS, MemberCache, type MemberCacheStats } from './membercache.js';
export { BucketMirror, type MirrorStats } from './mirror.js';
export { USER_CACHE_BOUND_MS, USER_CACHE_HEARTBEAT_MS, UserCache } from './usercache.js';
export type {
  AuditAppendOptions,
  AuditQuery,
  AuditQueryResult,
  BucketReplication,
  KvObservation,
  KvObserver,
  KvOperation,
  OpenStoreOptions,
  StoreLogger,
} from './types.js';
export {
  AUDIT_STREAM,
  AUDIT_SUBJECT_PREFIX,
  AuditLog,
  STORED_AT_HEADER,
  auditSubjectFilter,
  storedAt,
} from './audit.js';
export {
  DEFAULT_ROOM_MAX_BYTES,
  MEMBER_HEARTBEAT_MS,
  Rooms,
  type CursorPosition,
  type RoomBuckets,
} from './rooms.js';
export {
  BLOB_STORE_CHUNK,
  BLOB_STORE_PREFIX,
  RoomBlobs,
  type BlobInfo,
  type StoredBlob,
} from './blobs.js';
