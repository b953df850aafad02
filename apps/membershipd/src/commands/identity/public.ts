import type { Command } from 'commander';
import { encodePublicIdentity, publicIdentityOf } from '@sealbus/crypto';
import { action, outputOption } from '../../cli.js';
import { loadIdentityForCli } from './load.js';

/**
 * `membershipd identity public FILE`: the public identity token (sbid1.…)
 * an admin registers with `user add --public`. Safe to share: public keys
 * and a binding signed by the sign key.
 */
export function registerIdentityPublic(identity: Command): void {
  identity
    .command('public')
    .description(
      'print the public identity token (sbid1.…: sign_pub, kex_pub, nats_pub and their binding) to register with'
    )
    .argument('<file>', 'an identity file')
    .addOption(outputOption())
    .action(
      action('identity public', async (file: string, opts: { output: string }) => {
        const p = publicIdentityOf(await loadIdentityForCli(file));
        const token = encodePublicIdentity(p);
        process.stdout.write(
          opts.output === 'json'
            ? JSON.stringify({
                sign_pub: p.signPubHex,
                kex_pub: p.kexPubHex,
                nats_pub: p.natsPubHex,
                binding: p.bindingHex,
                token,
              }) + '\n'
            : `${token}\n`
        );
      })
    );
}
