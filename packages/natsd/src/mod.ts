export { NatsdError, type NatsdErrorCode } from './errors.js';
export {
  MIN_NATS_SERVER_VERSION,
  natsServerVersion,
  resolveNatsServerBinary,
  versionAtLeast,
  type NatsServerBinary,
} from './binary.js';
export { envRef, envValue, renderNatsConfig, type EnvRef, type NatsConfigValue } from './config.js';
export {
  NatsServerProcess,
  parseNatsLogLine,
  reapOrphan,
  type ReapOptions,
  type NatsExit,
  type NatsLogLevel,
  type NatsLogLine,
  type StartOptions,
} from './process.js';
