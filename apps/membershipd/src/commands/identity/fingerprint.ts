import type { Command } from 'commander';
import { fingerprint } from '@sealbus/crypto';
import { action, outputOption } from '../../cli.js';
import { loadIdentityForCli } from './load.js';

/**
 * `membershipd identity fingerprint FILE`: the sign key's fingerprint, 60
 * digits in 12 groups of 5, the same as the SDK's `bus.fingerprint(signPub)`.
 * Read it to the other side out of band before trusting their rooms.
 */
export function registerIdentityFingerprint(identity: Command): void {
  identity
    .command('fingerprint')
    .description(
      "print the sign key's fingerprint (60 digits, 12 groups of 5) to compare out of band; the SDK's bus.fingerprint() gives the same"
    )
    .argument('<file>', 'an identity file')
    .addOption(outputOption())
    .action(
      action('identity fingerprint', async (file: string, opts: { output: string }) => {
        const id = await loadIdentityForCli(file);
        const fp = fingerprint(id.signPub);
        process.stdout.write(
          opts.output === 'json'
            ? JSON.stringify({ sign_pub: id.signPubHex, fingerprint: fp }) + '\n'
            : `${fp}\n`
        );
      })
    );
}
