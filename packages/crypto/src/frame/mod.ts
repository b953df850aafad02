export { FrameError, type FrameErrorCode } from './errors.js';
export {
  FRAME_HEADER_BYTES,
  FRAME_MAX_PAYLOAD,
  FRAME_SIGNATURE_BYTES,
  FRAME_VERSION,
  FrameSealer,
  frameSignatureValid,
  openFramePayload,
  parseFrame,
  type FrameHeader,
  type ParsedFrame,
  type SealOptions,
} from './codec.js';
export { ReplayWindow, type SeqVerdict } from './replay.js';
