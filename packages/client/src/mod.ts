export { ControlClient, type ControlClientOptions } from './control.js';
export { ControlError, type ControlAttempt } from './errors.js';
export { newRoomKey, openRoomKey, sealRoomKey } from './keys.js';
