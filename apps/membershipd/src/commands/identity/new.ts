import type { Command } from 'commander';
import { loadOrCreateIdentity } from '@sealbus/crypto';
import { action, CliError, EXIT_CODES, outputOption } from '../../cli.js';
import { printKeys, publicKeysOf } from './load.js';

export function registerIdentityNew(identity: Command): void {
  identity
    .command('new')
    .description('create a new identity file (refuses to overwrite) and print its public keys')
    .argument('<file>', 'where to write it')
    .addOption(outputOption())
    .action(
      action('identity new', async (file: string, opts: { output: string }) => {
        const { identity: id, created } = await loadOrCreateIdentity(file);
        if (!created) throw new CliError(EXIT_CODES.FAILED, `${file} already exists (unchanged)`);
        printKeys(opts.output, file, publicKeysOf(id));
      })
    );
}
