export { ControlClient, type ControlClientOptions } from './control.js';
export { ControlError, type ControlAttempt } from './errors.js';
export { newRoomKey, openRoomKey, sealRoomKey } from './keys.js';
export { RoomState, type PossibleLoss, type RejectedFrame, type RoomMessage } from './roomstate.js';
export {
  Sealbus,
  type MessageHandler,
  type RoomSubscription,
  type SealbusEvents,
  type SealbusOptions,
  type SubscribeOptions,
} from './sealbus.js';
