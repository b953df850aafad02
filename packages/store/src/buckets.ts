/** One KV bucket of the control plane. */
export interface BucketSpec {
  readonly name: string;
  readonly description: string;
  /** Values kept per key: 1 where a row is current state. */
  readonly history: number;
  /** Max age of an entry, for buckets that must stay bounded (nonces). */
  readonly ttlMs?: number;
}

export type BucketId =
  'users' | 'natsKeys' | 'rooms' | 'members' | 'roomsByMember' | 'roomKeys' | 'nonces';

/** Default max age of a request nonce; must cover the signature window. */
export const DEFAULT_NONCE_TTL_MS = 10 * 60_000;

export function bucketSpecs(
  nonceTtlMs = DEFAULT_NONCE_TTL_MS
): Readonly<Record<BucketId, BucketSpec>> {
  return Object.freeze({
    users: { name: 'sealbus_users', description: 'allowlist: sign_pub -> user record', history: 1 },
    natsKeys: {
      name: 'sealbus_nats_keys',
      description: 'nats_pub -> {sign_pub} of the user whose bound record names it (callout index)',
      history: 1,
    },
    rooms: {
      name: 'sealbus_rooms',
      description: 'room id -> room (subject, owner, policy, epoch)',
      history: 1,
    },
    members: {
      name: 'sealbus_members',
      description: '<room>.<sign_pub> -> membership',
      history: 1,
    },
    roomsByMember: {
      name: 'sealbus_rooms_by_member',
      description: '<sign_pub>.<room> -> role, the reverse index of members',
      history: 1,
    },
    roomKeys: {
      name: 'sealbus_room_keys',
      description: '<room>.<epoch>.<sign_pub> -> room key sealed to that member',
      history: 1,
    },
    nonces: {
      name: 'sealbus_nonces',
      description: '<keyid>.<nonce> -> first use of a request nonce (create-only, expires)',
      history: 1,
      ttlMs: nonceTtlMs,
    },
  });
}
