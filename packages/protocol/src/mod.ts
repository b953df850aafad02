export { ValidationError } from './errors.js';
export { parseKeyHex, parseSignPubHex } from './keys.js';
export {
  ROLES,
  USER_STATUSES,
  handleSchema,
  keyHexSchema,
  newUserSchema,
  parseOrThrow,
  roleSchema,
  userRecordSchema,
  userStatusSchema,
  type NewUser,
  type Role,
  type UserRecord,
  type UserStatus,
} from './users.js';
