import { Option, type Command } from 'commander';
import {
  CryptoError,
  encodePublicIdentity,
  loadIdentity,
  parsePublicIdentity,
} from '@sealbus/crypto';
import {
  handleSchema,
  parseKeyHex,
  parseOrThrow,
  ROLES,
  type NewUser,
  type Role,
} from '@sealbus/protocol';
import { StoreError } from '@sealbus/store';
import { action, CliError, EXIT_CODES } from '../../cli.js';
import { parseExpiry } from '../../util/expiry.js';
import * as users from '../../usecases/users.js';
import {
  addNodeOptions,
  cliEdge,
  replicationLine,
  withNodeStore,
  type NodeOptions,
} from './node.js';

interface AddOptions extends NodeOptions {
  handle: string;
  public?: string;
  identity?: string;
  signPub?: string;
  kexPub?: string;
  role: Role;
  expires?: string;
}

/** The keys to register, from exactly one of --public, --identity or --sign-pub. */
async function keysOf(opts: AddOptions): Promise<Pick<NewUser, 'public' | 'sign_pub' | 'kex_pub'>> {
  const given = [opts.public, opts.identity, opts.signPub].filter((v) => v !== undefined).length;
  if (given !== 1)
    throw new CliError(
      EXIT_CODES.USAGE,
      'give exactly one of --public TOKEN, --identity FILE or --sign-pub HEX'
    );
  if (opts.kexPub !== undefined && opts.signPub === undefined)
    throw new CliError(EXIT_CODES.USAGE, '--kex-pub goes with --sign-pub only');
  if (opts.public !== undefined) {
    try {
      parsePublicIdentity(opts.public); // BAD_TOKEN / BAD_BINDING before any connection
    } catch (err) {
      if (err instanceof CryptoError)
        throw new CliError(EXIT_CODES.USAGE, `--public: ${err.message}`);
      throw err;
    }
    return { public: opts.public };
  }
  if (opts.identity !== undefined) {
    try {
      return { public: encodePublicIdentity(await loadIdentity(opts.identity)) };
    } catch (err) {
      if (err instanceof CryptoError) throw new CliError(EXIT_CODES.FAILED, err.message);
      throw err;
    }
  }
  return {
    sign_pub: parseKeyHex(opts.signPub, 'sign_pub'),
    kex_pub: opts.kexPub === undefined ? null : parseKeyHex(opts.kexPub, 'kex_pub'),
  };
}

export function registerUserAdd(user: Command): void {
  addNodeOptions(
    user
      .command('add')
      .description(
        'register a user in the allowlist (create-only: an existing key is left unchanged); ' +
          '--public or --identity registers it bound, --sign-pub unbound (its SDK binds it at connect)'
      )
      .requiredOption('--handle <handle>', 'a short name for people and logs')
      .option(
        '--public <token>',
        "the user's public identity token (sbid1.…, from `membershipd identity public`)"
      )
      .option('--identity <file>', "read the user's public identity token from an identity file")
      .option('--sign-pub <hex>', "the user's Ed25519 public key (64 hex): an unbound user")
      .option(
        '--kex-pub <hex>',
        "with --sign-pub: the user's X25519 public key (64 hex), needed to receive room keys"
      )
      .addOption(new Option('--role <role>', 'role').choices(ROLES).makeOptionMandatory())
      .option(
        '--expires <when>',
        'the grant ends then: a duration from now (30d, 12h) or an RFC 3339 time'
      )
  ).action(
    action('user add', async (opts: AddOptions) => {
      // Validate everything before touching the network.
      const keys = await keysOf(opts);
      const handle = parseOrThrow(handleSchema, opts.handle, 'handle');
      const expiresAt = opts.expires === undefined ? null : parseExpiry(opts.expires);
      await withNodeStore(opts, async ({ store, nc }) => {
        let added;
        try {
          added = await users.addUser(cliEdge(store, nc), {
            ...keys,
            handle,
            role: opts.role,
            expires_at: expiresAt,
          });
        } catch (err) {
          if (err instanceof StoreError && err.code === 'CONFLICT') {
            const hint = /already registered/.test(err.message)
              ? '; revoke it first to replace'
              : '';
            throw new CliError(EXIT_CODES.FAILED, `${err.message}${hint}`);
          }
          if (err instanceof CryptoError) throw new CliError(EXIT_CODES.USAGE, err.message);
          throw err;
        }
        const signPub = added.sign_pub;
        process.stdout.write(
          `added user ${handle} (${signPub}) role=${opts.role} ${added.bound ? `bound nats_pub=${added.nats_pub}` : 'unbound'}${expiresAt ? ` expires=${expiresAt}` : ''}\n`
        );
        process.stdout.write(`${await replicationLine(store)}\n`);
      });
    })
  );
}
