/**
 * One Sealbus identity: an Ed25519 pair that signs control-plane requests,
 * room frames and key bindings, and an X25519 pair that room keys are sealed
 * to. NATS sees only a key derived from the sign seed (`natsPub`, see
 * `natsUserSeed`), never the sign key. Private fields are secrets: never log
 * them.
 */
export interface Identity {
  /** Ed25519 public key, 32 bytes. */
  readonly signPub: Uint8Array;
  /** Ed25519 private seed, 32 bytes (RFC 8032's "private key"). */
  readonly signSeed: Uint8Array;
  /** X25519 public key, 32 bytes. */
  readonly kexPub: Uint8Array;
  /** X25519 private scalar, 32 bytes. */
  readonly kexPriv: Uint8Array;
  /** Lowercase hex of `signPub`: the user's primary key everywhere. */
  readonly signPubHex: string;
  /** Lowercase hex of `kexPub`. */
  readonly kexPubHex: string;
  /** Ed25519 public key of the derived NATS user key (`natsUserSeed`), 32 bytes. */
  readonly natsPub: Uint8Array;
  /** Lowercase hex of `natsPub`. */
  readonly natsPubHex: string;
}

/**
 * The identity file, an interface other tools read: exactly these fields,
 * lowercase hex, mode 0600.
 */
export interface IdentityFile {
  version: 1;
  sign_pub: string;
  sign_priv: string;
  kex_pub: string;
  kex_priv: string;
}
