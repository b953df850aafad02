import type { Command } from 'commander';
import { CryptoError, loadIdentity, loadOrCreateIdentity } from '@sealbus/crypto';
import { action, CliError, EXIT_CODES } from '../../cli.js';
import { loadOrCreateCalloutKeys } from '../../dataplane/keys.js';

/**
 * Key files an operator makes before a deployment: user identities and the
 * auth callout keys that every node of a cluster shares. Never overwrites.
 */
export function registerKeys(program: Command): void {
  const identity = program
    .command('identity')
    .description('create or inspect identity files (Ed25519 + X25519, 0600)');
  identity
    .command('new')
    .description('create a new identity file (refuses to overwrite) and print its public keys')
    .argument('<file>', 'where to write it')
    .option('-o, --output <format>', 'text or json', 'text')
    .action(
      action('identity new', async (file: string, opts: { output: string }) => {
        const { identity: id, created } = await loadOrCreateIdentity(file);
        if (!created) throw new CliError(EXIT_CODES.FAILED, `${file} already exists (unchanged)`);
        print(opts.output, { file, sign_pub: id.signPubHex, kex_pub: id.kexPubHex });
      })
    );
  identity
    .command('show')
    .description("print an identity file's public keys")
    .argument('<file>')
    .option('-o, --output <format>', 'text or json', 'text')
    .action(
      action('identity show', async (file: string, opts: { output: string }) => {
        let id;
        try {
          id = await loadIdentity(file);
        } catch (err) {
          if (err instanceof CryptoError) throw new CliError(EXIT_CODES.FAILED, err.message);
          throw err;
        }
        print(opts.output, { file, sign_pub: id.signPubHex, kex_pub: id.kexPubHex });
      })
    );

  program
    .command('callout-key')
    .description('auth callout keys (issuer + xkey) shared by every node of a deployment')
    .command('new')
    .description('create the callout key file (0600; refuses to overwrite); copy it to every node')
    .argument('<file>')
    .action(
      action('callout-key new', async (file: string) => {
        const { keys, created } = await loadOrCreateCalloutKeys(file);
        if (!created) throw new CliError(EXIT_CODES.FAILED, `${file} already exists (unchanged)`);
        process.stdout.write(
          `created ${file}\nissuer ${keys.issuer.getPublicKey()}\nxkey   ${keys.xkey.getPublicKey()}\n`
        );
      })
    );
}

function print(format: string, v: { file: string; sign_pub: string; kex_pub: string }): void {
  process.stdout.write(
    format === 'json'
      ? JSON.stringify(v) + '\n'
      : `${v.file}\nsign_pub ${v.sign_pub}\nkex_pub  ${v.kex_pub}\n`
  );
}
