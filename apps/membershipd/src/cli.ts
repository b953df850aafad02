import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { CryptoError } from '@sealbus/crypto';
import { ValidationError } from '@sealbus/protocol';
import { StoreError } from '@sealbus/store';
import { registerServe } from './commands/serve.js';
import { registerAudit } from './commands/audit/index.js';
import { registerBackup, registerRestore } from './commands/backup.js';
import { registerMigrate } from './commands/migrate.js';
import { registerIdentity } from './commands/identity/index.js';
import { registerKeys } from './commands/keys/index.js';
import { registerUser } from './commands/user/index.js';
import { registerSign } from './commands/sign.js';
import { VERSION } from './version.js';

/** Exit codes shared by every subcommand. */
export const EXIT_CODES = Object.freeze({ OK: 0, FAILED: 1, USAGE: 2 });

/** A command failure with the exit code it deserves and a message for stderr. */
export class CliError extends Error {
  readonly exitCode: number;

  constructor(exitCode: number, message: string) {
    super(message);
    this.name = new.target.name;
    this.exitCode = exitCode;
  }
}

/** Wraps a parser for commander so a bad value is a usage error (exit 2) with our message. */
export function argParser<T>(parse: (v: string) => T): (v: string) => T {
  return (v) => {
    try {
      return parse(v);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };
}

/** `-o, --output <format>`: one of `choices`, `choices[0]` by default. */
export function outputOption(choices: readonly string[] = ['text', 'json']): Option {
  return new Option('-o, --output <format>', 'output format').choices(choices).default(choices[0]);
}

/** A positive record count up to six digits (`-n`). */
export const parseCount = argParser((v) => {
  if (!/^\d{1,6}$/.test(v) || Number(v) < 1) throw new Error('-n must be a positive number');
  return Number(v);
});

/**
 * Runs a command body, turning errors into `membershipd <cmd>: <message>` on
 * stderr and an exit code: invalid input 2, anything else 1.
 */
export function action<A extends unknown[]>(name: string, body: (...args: A) => Promise<void>) {
  return async (...args: A): Promise<void> => {
    try {
      await body(...args);
    } catch (err) {
      let code: number = EXIT_CODES.FAILED;
      if (err instanceof CliError) code = err.exitCode;
      else if (err instanceof ValidationError) code = EXIT_CODES.USAGE;
      else if (err instanceof StoreError && err.code === 'INVALID') code = EXIT_CODES.USAGE;
      process.stderr.write(`membershipd ${name}: ${(err as Error).message}\n`);
      process.exitCode = code;
    }
  };
}

export function buildProgram(): Command {
  const program = new Command('membershipd')
    .description('Sealbus membership daemon and node tools')
    .version(VERSION)
    .showHelpAfterError('(add --help for usage)')
    // Lets a subcommand own an option its parent also has (`backup inspect -o json`).
    .enablePositionalOptions()
    .exitOverride();
  registerServe(program);
  registerUser(program);
  registerAudit(program);
  registerBackup(program);
  registerRestore(program);
  registerMigrate(program);
  registerIdentity(program);
  registerKeys(program);
  registerSign(program);
  return program;
}

/** Parses argv and runs the command; resolves with the exit code. */
export async function run(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      const ok =
        err.code === 'commander.helpDisplayed' ||
        err.code === 'commander.version' ||
        err.code === 'commander.help';
      return ok ? EXIT_CODES.OK : EXIT_CODES.USAGE;
    }
    const message = err instanceof CryptoError || err instanceof Error ? err.message : String(err);
    process.stderr.write(`membershipd: ${message}\n`);
    return EXIT_CODES.FAILED;
  }
  return typeof process.exitCode === 'number' ? process.exitCode : EXIT_CODES.OK;
}
