export { SignatureError, type SignatureErrorCode } from './errors.js';
export { componentValue, serializeSignatureParams, signatureBase } from './base.js';
export { contentDigest, contentDigestSha256, sameDigest, verifyContentDigest } from './digest.js';
export { parseSignatureFields, type ParsedSignature } from './parse.js';
export {
  SEALBUS_PROFILE,
  claimedKeyId,
  requestSigner,
  signRequest,
  verifyRequestSignature,
  verifyRequestSignatureHead,
  type RequestSigner,
  type SignOptions,
  type SignRequestInput,
  type VerifiedSignature,
  type VerifyPolicy,
} from './profile.js';
export type { SignableRequest, SignatureParams } from './types.js';
export { verifyHttpSignature, verifyParsedSignature } from './verify.js';
