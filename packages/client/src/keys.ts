import { randomBytes } from 'node:crypto';
import { fromHex, openSealed, seal, type Identity } from '@sealbus/crypto';

/** A fresh 32-byte room key. Only clients make these; the daemon never sees one. */
export function newRoomKey(): Uint8Array {
  return new Uint8Array(randomBytes(32));
}

/** Seals a room key to a member's X25519 key (kex_pub hex), as standard base64. */
export function sealRoomKey(key: Uint8Array, kexPubHex: string): string {
  return Buffer.from(seal(key, fromHex(kexPubHex, 'kex_pub', 32))).toString('base64');
}

/** Opens a room key sealed to this identity. */
export function openRoomKey(sealedB64: string, identity: Identity): Uint8Array {
  return openSealed(
    new Uint8Array(Buffer.from(sealedB64, 'base64')),
    identity.kexPub,
    identity.kexPriv
  );
}
