import type { Command } from 'commander';
import { action, CliError, EXIT_CODES } from '../../cli.js';
import { loadOrCreateCalloutKeys } from '../../dataplane/keys.js';

/**
 * The auth callout keys that every node of a cluster shares, made before a
 * deployment. Never overwrites. (Identity files: `membershipd identity`.)
 */
export function registerKeys(program: Command): void {
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
