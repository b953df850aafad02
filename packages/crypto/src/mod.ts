// Side effect: nkeys.js signs and verifies with node:crypto from here on.
import './nkeyshelper.js';
export { CryptoError, type CryptoErrorCode } from './errors.js';
export { assertBytes, concatBytes, fromHex, toHex } from './bytes.js';
export {
  ED25519_PUBLIC_BYTES,
  ED25519_SEED_BYTES,
  ED25519_SIGNATURE_BYTES,
  ed25519GenerateSeed,
  ed25519PublicFromSeed,
  ed25519Sign,
  ed25519Signer,
  ed25519Verify,
  type Ed25519Signer,
} from './ed25519.js';
export {
  X25519_KEY_BYTES,
  x25519GeneratePrivate,
  x25519PublicFromPrivate,
  x25519SharedSecret,
} from './x25519.js';
export { SEAL_OVERHEAD, openSealed, seal } from './sealedbox.js';
export {
  deriveSeed,
  nkeySeedFromRaw,
  publicFromUserNkey,
  userNkeyFromPublic,
  userNkeyFromSeed,
  type NkeyKind,
  type UserNkey,
} from './nkeys.js';
export { NATS_USER_INFO, natsUserKey, natsUserSeed } from './natsuser.js';
export {
  KEY_BINDING_BYTES,
  KEY_BINDING_LABEL,
  keyBindingMessage,
  signKeyBinding,
  verifyKeyBinding,
  type BoundKeys,
} from './binding.js';
export {
  PUBLIC_TOKEN_BYTES,
  PUBLIC_TOKEN_PREFIX,
  encodePublicIdentity,
  parsePublicIdentity,
  publicIdentityOf,
  type PublicIdentity,
} from './publicid.js';
export {
  generateIdentity,
  identityFromFileContent,
  identityFromSecrets,
  identityToFile,
  loadIdentity,
  loadOrCreateIdentity,
  saveIdentity,
  serializeIdentity,
} from './identity.js';
export { writeFileAtomic, type WriteAtomicOptions } from './fsutil.js';
export type { Identity, IdentityFile } from './types.js';
export * from './httpsig/mod.js';
export * from './frame/mod.js';
export { fastEd25519Helper } from './nkeyshelper.js';
export {
  FINGERPRINT_LABEL,
  FINGERPRINT_ROUNDS,
  KEY_COMMITMENT_LABEL,
  ROOM_STATEMENT_LABEL,
  fingerprint,
  keyCommitment,
  roomStatementHash,
  roomStatementMessage,
  signRoomStatement,
  verifyRoomStatement,
} from './statement.js';
export {
  BLOB_CHUNK,
  BLOB_CHUNK_MAX,
  BLOB_CHUNK_MIN,
  BLOB_KEY_BYTES,
  BLOB_LABEL,
  BLOB_MAX_SIZE,
  BLOB_NAME_MAX_BYTES,
  BLOB_TAG_BYTES,
  BLOB_TYPE_MAX_CHARS,
  BlobCorruptError,
  BlobError,
  blobCiphertextSize,
  blobPlaintextSize,
  decodeBlobKey,
  decryptBlob,
  encodeBlobKey,
  encryptBlob,
  newBlobKey,
  parseBlobRef,
  type BlobCiphertext,
  type BlobData,
  type BlobErrorCode,
  type BlobOpenOptions,
  type BlobRef,
  type BlobSealOptions,
  type SealedBlob,
  type SealedBlobStream,
} from './blob.js';
