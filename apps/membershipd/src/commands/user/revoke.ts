import type { Command } from 'commander';
import { parseKeyHex } from '@sealbus/protocol';
import { StoreError } from '@sealbus/store';
import { action, CliError, EXIT_CODES } from '../../cli.js';
import * as users from '../../usecases/users.js';
import {
  addNodeOptions,
  cliEdge,
  replicationLine,
  withNodeStore,
  type NodeOptions,
} from './node.js';

export function registerUserRevoke(user: Command): void {
  addNodeOptions(
    user
      .command('revoke')
      .description('revoke a user: a status flip kept for audit, never a delete')
      .argument('<sign_pub>', "the user's Ed25519 public key (64 hex)")
  ).action(
    action('user revoke', async (signPubArg: string, opts: NodeOptions) => {
      const signPub = parseKeyHex(signPubArg, 'sign_pub');
      await withNodeStore(opts, async ({ store, nc }) => {
        let result;
        try {
          // Live connections are cut by whichever daemon picks the change up.
          result = await users.revokeUser(cliEdge(store, nc), signPub);
        } catch (err) {
          if (err instanceof StoreError && err.code === 'NOT_FOUND') {
            throw new CliError(EXIT_CODES.FAILED, `no user with sign_pub ${signPub}`);
          }
          throw err;
        }
        const { user, changed } = result;
        process.stdout.write(
          changed
            ? `revoked user ${user.handle} (${user.sign_pub}) at ${user.revoked_at}\n`
            : `user ${user.handle} (${user.sign_pub}) was already revoked at ${user.revoked_at} (unchanged)\n`
        );
        if (changed) process.stdout.write(`${await replicationLine(store)}\n`);
      });
    })
  );
}
