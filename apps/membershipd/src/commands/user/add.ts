import { Option, type Command } from 'commander';
import { handleSchema, parseKeyHex, parseOrThrow, ROLES, type Role } from '@sealbus/protocol';
import { StoreError } from '@sealbus/store';
import { action, CliError, EXIT_CODES } from '../../cli.js';
import { parseExpiry } from '../../util/expiry.js';
import {
  addNodeOptions,
  auditCliChange,
  replicationLine,
  withNodeStore,
  type NodeOptions,
} from './node.js';

interface AddOptions extends NodeOptions {
  handle: string;
  signPub: string;
  kexPub?: string;
  role: Role;
  expires?: string;
}

export function registerUserAdd(user: Command): void {
  addNodeOptions(
    user
      .command('add')
      .description(
        'register a user in the allowlist (create-only: an existing key is left unchanged)'
      )
      .requiredOption('--handle <handle>', 'a short name for people and logs')
      .requiredOption('--sign-pub <hex>', "the user's Ed25519 public key (64 hex)")
      .option(
        '--kex-pub <hex>',
        "the user's X25519 public key (64 hex), needed to receive room keys"
      )
      .addOption(new Option('--role <role>', 'role').choices(ROLES).makeOptionMandatory())
      .option(
        '--expires <when>',
        'the grant ends then: a duration from now (30d, 12h) or an RFC 3339 time'
      )
  ).action(
    action('user add', async (opts: AddOptions) => {
      // Validate everything before touching the network.
      const signPub = parseKeyHex(opts.signPub, 'sign_pub');
      const kexPub = opts.kexPub === undefined ? null : parseKeyHex(opts.kexPub, 'kex_pub');
      const handle = parseOrThrow(handleSchema, opts.handle, 'handle');
      const expiresAt = opts.expires === undefined ? null : parseExpiry(opts.expires);
      await withNodeStore(opts, async ({ store }) => {
        try {
          await store.addUser({
            sign_pub: signPub,
            kex_pub: kexPub,
            handle,
            role: opts.role,
            expires_at: expiresAt,
          });
        } catch (err) {
          if (err instanceof StoreError && err.code === 'CONFLICT') {
            throw new CliError(
              EXIT_CODES.FAILED,
              `user ${signPub} already registered (unchanged); revoke it first to replace`
            );
          }
          throw err;
        }
        await auditCliChange(store, 'user.add', signPub, {
          handle,
          role: opts.role,
          ...(expiresAt ? { expires_at: expiresAt } : {}),
        });
        process.stdout.write(
          `added user ${handle} (${signPub}) role=${opts.role}${expiresAt ? ` expires=${expiresAt}` : ''}\n`
        );
        process.stdout.write(`${await replicationLine(store)}\n`);
      });
    })
  );
}
