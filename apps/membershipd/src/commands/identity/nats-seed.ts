import type { Command } from 'commander';
import { natsUserKey } from '@sealbus/crypto';
import { action } from '../../cli.js';
import { loadIdentityForCli } from './load.js';

/**
 * `membershipd identity nats-seed FILE`: the derived NATS user seed (SU…),
 * e.g. for the `nats` CLI (`--nkey`). Printed on stdout only, with a
 * warning on stderr: it is a secret that opens this identity's connections.
 */
export function registerIdentityNatsSeed(identity: Command): void {
  identity
    .command('nats-seed')
    .description(
      'print the derived NATS user seed (SU…) for tools such as the nats CLI; a SECRET (never the sign key)'
    )
    .argument('<file>', 'an identity file')
    .action(
      action('identity nats-seed', async (file: string) => {
        const key = natsUserKey(await loadIdentityForCli(file));
        process.stderr.write(
          `warning: this is a SECRET: anyone holding it connects to NATS as ${key.publicKey}; ` +
            'store it like the identity file (0600), never in logs or shell history\n'
        );
        process.stdout.write(`${key.seed}\n`);
      })
    );
}
