import type { Command } from 'commander';
import { publicFromUserNkey, toHex } from '@sealbus/crypto';
import { action, CliError, EXIT_CODES, outputOption } from '../../cli.js';
import { formatTable } from './list.js';
import { addNodeOptions, withNodeStore, type NodeOptions } from './node.js';

interface LookupOptions extends NodeOptions {
  output: 'table' | 'json';
}

/**
 * `membershipd user lookup U…`: the user a NATS key (as nats-server logs
 * and callout denials name it) belongs to, so an operator gets from a log
 * line to the sign_pub the other commands take.
 */
export function registerUserLookup(user: Command): void {
  addNodeOptions(
    user
      .command('lookup')
      .description('the user a NATS user nkey (U…, as nats-server and denials log it) belongs to')
      .argument('<nkey>', 'a NATS user public key (U…), or its 64-hex form')
      .addOption(outputOption(['table', 'json']))
  ).action(
    action('user lookup', async (nkeyArg: string, opts: LookupOptions) => {
      let hex: string;
      try {
        hex = /^[0-9a-fA-F]{64}$/.test(nkeyArg)
          ? nkeyArg.toLowerCase()
          : toHex(publicFromUserNkey(nkeyArg));
      } catch {
        throw new CliError(
          EXIT_CODES.USAGE,
          `"${nkeyArg}" is not a NATS user public key (U followed by 55 base32 characters)`
        );
      }
      await withNodeStore(opts, async ({ store }) => {
        const found = await store.userByNatsKey(hex);
        if (found.kind === 'unknown')
          throw new CliError(EXIT_CODES.FAILED, `no user has the NATS key ${nkeyArg}`);
        const note =
          found.kind === 'sign_key'
            ? `note: ${nkeyArg} is ${found.user.handle}'s sign key, not a NATS key: a sign key never connects to NATS\n`
            : '';
        if (opts.output === 'json')
          process.stdout.write(
            JSON.stringify({ match: found.kind, user: found.user }, null, 2) + '\n'
          );
        else process.stdout.write(formatTable([found.user]) + note);
      });
    })
  );
}
