import type { Command } from 'commander';
import { action, outputOption } from '../../cli.js';
import { loadIdentityForCli, printKeys, publicKeysOf } from './load.js';

export function registerIdentityShow(identity: Command): void {
  identity
    .command('show')
    .description("print an identity file's public keys (nats_pub: its derived NATS key)")
    .argument('<file>')
    .addOption(outputOption())
    .action(
      action('identity show', async (file: string, opts: { output: string }) => {
        printKeys(opts.output, file, publicKeysOf(await loadIdentityForCli(file)));
      })
    );
}
