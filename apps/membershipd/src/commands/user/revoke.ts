import type { Command } from 'commander';
import { parseKeyHex } from '@sealbus/protocol';
import { StoreError } from '@sealbus/store';
import { action, CliError, EXIT_CODES } from '../../cli.js';
import { announce } from '../../dataplane/reactor.js';
import {
  addNodeOptions,
  auditCliChange,
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
          result = await store.revokeUser(signPub);
        } catch (err) {
          if (err instanceof StoreError && err.code === 'NOT_FOUND') {
            throw new CliError(EXIT_CODES.FAILED, `no user with sign_pub ${signPub}`);
          }
          throw err;
        }
        const { user, changed } = result;
        if (changed) {
          await auditCliChange(store, 'user.revoke', signPub, { handle: user.handle });
          // Live connections are cut by whichever daemon picks this up.
          await announce(nc, { type: 'user.revoked', sign_pub: signPub });
        }
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
