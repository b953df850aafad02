import { existsSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import { resolve } from 'node:path';
import type { Command } from 'commander';
import { ArchiveError, buildArchive, type VerifiedArchive } from '../backup/archive.js';
import { OfflineError, withOfflineStore } from '../backup/offline.js';
import { recoverSwap, swapIn, swapPaths } from '../backup/swap.js';
import { checkRestorable, dumpStore, loadStore, verifyAgainst } from '../backup/snapshot.js';
import { action, CliError, EXIT_CODES, outputOption } from '../cli.js';
import { AT_REST_KEY_ENV, AtRestError, checkStore, loadAtRestKey } from '../daemon/atrest.js';
import { dataPaths, legacyStoreLayout } from '../daemon/paths.js';
import { VERSION } from '../version.js';

interface MigrateOptions {
  data: string;
  atRestKeyFile?: string;
  natsServerBin?: string;
  output: 'text' | 'json';
}

/** Where the 0.1 store is kept after a migration (for a rollback to 0.1). */
export const LEGACY_KEPT_SUFFIX = '.v0.1';

/**
 * `membershipd migrate`: rewrites a stopped single node's 0.1 store (control
 * state in account APP) into the current layout (control state in account
 * SEALBUS), offline. It reads everything the way `backup` does, writes it
 * the way `restore` does into a staging store, reads it back and compares,
 * and only then swaps it in; the 0.1 store is kept beside it as
 * `nats/jetstream.v0.1`. A failure at any step leaves the data dir as it was.
 */
export function registerMigrate(program: Command): void {
  program
    .command('migrate')
    .description(
      "rewrite a stopped node's Sealbus 0.1 store into the current layout (offline, verified, the old store kept)"
    )
    .option('--data <dir>', 'the data directory', './data')
    .option(
      '--at-rest-key-file <path>',
      `the store's at-rest key, if it is encrypted (or set ${AT_REST_KEY_ENV})`
    )
    .option('--nats-server-bin <path>', 'nats-server binary')
    .addOption(outputOption())
    .action(
      action('migrate', async (opts: MigrateOptions) => {
        const paths = dataPaths(resolve(opts.data));
        // A migration or restore killed half-way through its swap: finished or undone first.
        const recovered = await recoverSwap(paths);
        if (recovered) process.stderr.write(`membershipd migrate: ${recovered}\n`);
        if (!legacyStoreLayout(paths)) {
          throw new CliError(
            EXIT_CODES.FAILED,
            `${paths.dataDir} holds no Sealbus 0.1 store: nothing to migrate`
          );
        }
        const kept = `${paths.jetstreamDir}${LEGACY_KEPT_SUFFIX}`;
        if (existsSync(kept)) {
          throw new CliError(
            EXIT_CODES.FAILED,
            `${kept} exists (an earlier migration's copy): move it away first`
          );
        }
        const { stage } = swapPaths(paths);
        try {
          const key = await loadAtRestKey(opts.atRestKeyFile);
          await checkStore(paths.storeMarker, paths.jetstreamDir, key);
          const bin = opts.natsServerBin ? { natsServerBin: opts.natsServerBin } : {};
          const sections = await withOfflineStore(
            paths,
            { key, layout: 'legacy', ...bin },
            (conns) => dumpStore(conns, undefined, { legacy: true })
          );
          const { manifest } = await buildArchive(
            {
              sealbus_version: VERSION,
              created_at: new Date().toISOString(),
              source: {
                mode: 'offline',
                data_dir: paths.dataDir,
                nats_server: null,
                at_rest: !!key,
              },
            },
            sections
          );
          const archive: VerifiedArchive = {
            manifest,
            sections: manifest.sections.map((section, i) => ({
              section,
              records: sections[i]!.records,
            })),
          };
          checkRestorable(archive);
          await rm(stage, { recursive: true, force: true });
          const verified = await withOfflineStore(
            paths,
            { key, storeDir: stage, ...bin },
            async (conns) => {
              await loadStore(conns, archive, { replicas: 1 });
              return verifyAgainst(conns, archive);
            }
          );
          const bad = verified.filter((v) => !v.ok).map((v) => `${v.name} (${v.difference})`);
          if (bad.length > 0)
            throw new ArchiveError(`read-back differs from the 0.1 store in ${bad.join(', ')}`);
          await swapIn(paths, key, kept);
          const report = {
            data_dir: paths.dataDir,
            kept,
            sections: manifest.sections.map((s) => ({
              name: s.name,
              kind: s.kind,
              count: s.count,
            })),
          };
          if (opts.output === 'json') {
            process.stdout.write(JSON.stringify(report, null, 2) + '\n');
            return;
          }
          process.stdout.write(
            `migrated ${paths.dataDir} to the current store layout (${manifest.totals.records} records, read back, identical)\n` +
              `  the 0.1 store is kept in ${kept}: remove it once the node serves\n` +
              '  users must reconnect with a current SDK (their NATS key is now derived: see README)\n'
          );
        } catch (err) {
          await rm(stage, { recursive: true, force: true }).catch(() => {});
          if (err instanceof CliError) throw err;
          if (
            err instanceof ArchiveError ||
            err instanceof AtRestError ||
            err instanceof OfflineError
          )
            throw new CliError(
              EXIT_CODES.FAILED,
              `migration failed, nothing changed: ${err.message}`
            );
          throw new CliError(
            EXIT_CODES.FAILED,
            `migration failed, nothing changed: ${(err as Error).message}`
          );
        }
      })
    );
}
