import { CryptoError, loadIdentity, type Identity } from '@sealbus/crypto';
import { CliError, EXIT_CODES } from '../../cli.js';

/** Loads an identity file; its errors (missing, permissions, corrupt) exit 1 with their message. */
export async function loadIdentityForCli(file: string): Promise<Identity> {
  try {
    return await loadIdentity(file);
  } catch (err) {
    if (err instanceof CryptoError) throw new CliError(EXIT_CODES.FAILED, err.message);
    throw err;
  }
}

/** The public keys every identity command prints. */
export interface PublicKeys {
  sign_pub: string;
  kex_pub: string;
  nats_pub: string;
}

export const publicKeysOf = (id: Identity): PublicKeys => ({
  sign_pub: id.signPubHex,
  kex_pub: id.kexPubHex,
  nats_pub: id.natsPubHex,
});

export function printKeys(format: string, file: string, keys: PublicKeys): void {
  process.stdout.write(
    format === 'json'
      ? JSON.stringify({ file, ...keys }) + '\n'
      : `${file}\nsign_pub ${keys.sign_pub}\nkex_pub  ${keys.kex_pub}\nnats_pub ${keys.nats_pub}\n`
  );
}
