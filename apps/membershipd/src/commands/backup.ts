import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import {
  ARCHIVE_KEY_ENV,
  ArchiveError,
  ArchiveKey,
  buildArchive,
  sealArchive,
  humanBytes,
  readArchive,
  writeArchiveFile,
  type Manifest,
  type VerifiedArchive,
} from '../backup/archive.js';
import { OfflineError, nodeRunning, withOfflineStore } from '../backup/offline.js';
import { recoverSwap, swapIn, swapPaths } from '../backup/swap.js';
import {
  checkRestorable,
  dumpStore,
  loadStore,
  verifyAgainst,
  type ReadBack,
  type Progress,
  type RestoredSection,
} from '../backup/snapshot.js';
import { action, CliError, EXIT_CODES, outputOption } from '../cli.js';
import {
  AT_REST_KEY_ENV,
  AtRestError,
  checkStore,
  hasEntries,
  loadAtRestKey,
  readStoreMarker,
} from '../daemon/atrest.js';
import { dataPaths } from '../daemon/paths.js';
import { VERSION } from '../version.js';
import { addNodeOptions, withNodeStore, type NodeOptions } from './user/node.js';

interface BackupOptions extends NodeOptions {
  out?: string;
  force: boolean;
  atRestKeyFile?: string;
  archiveKeyFile?: string;
  natsServerBin?: string;
  /** `--no-blobs` sets it false. */
  blobs: boolean;
  output: 'text' | 'json';
}

interface RestoreOptions {
  data: string;
  in: string;
  force: boolean;
  allowUnauthenticated: boolean;
  atRestKeyFile?: string;
  archiveKeyFile?: string;
  natsServerBin?: string;
  output: 'text' | 'json';
}

/** Progress on stderr when it is a terminal (at most ten updates a second); silent otherwise. */
function terminalProgress(verb: string): { progress?: Progress; end: () => void } {
  if (!process.stderr.isTTY) return { end: () => {} };
  let last = 0;
  let shown = false;
  return {
    progress: (section, done, total) => {
      const now = Date.now();
      if (now - last < 100 && done < total) return;
      last = now;
      shown = true;
      process.stderr.write(`\r\x1b[K${verb} ${section}: ${done}/${total}`);
    },
    end: () => {
      if (shown) process.stderr.write('\r\x1b[K');
    },
  };
}

function sectionTable(rows: Array<{ name: string; kind: string; count: number; extra: string }>) {
  const w = Math.max(7, ...rows.map((r) => r.name.length));
  return rows
    .map(
      (r) =>
        `  ${r.name.padEnd(w)}  ${r.kind.padEnd(6)}  ${String(r.count).padStart(8)}  ${r.extra}`
    )
    .join('\n');
}

/** Maps the failures these commands expect to one-line errors. */
function known(err: unknown): never {
  if (err instanceof ArchiveError || err instanceof AtRestError || err instanceof OfflineError) {
    throw new CliError(EXIT_CODES.FAILED, err.message);
  }
  throw err;
}

export function registerBackup(program: Command): void {
  const backup = addNodeOptions(
    program
      .command('backup')
      .description(
        'write the control plane (every bucket and the audit log) to one verified archive; ' +
          'from a running node over its privileged loopback path, or from a stopped node offline'
      )
      .option('--out <file>', 'the archive to write (gzip tar, mode 0600)')
      .option('--force', 'replace an existing --out file', false)
      .option(
        '--at-rest-key-file <path>',
        `the store's at-rest key, to read a stopped encrypted node (or set ${AT_REST_KEY_ENV})`
      )
      .option(
        '--archive-key-file <path>',
        `encrypt the archive (ChaCha20-Poly1305) with the key in this file (0600; or set ${ARCHIVE_KEY_ENV})`
      )
      .option('--nats-server-bin <path>', 'nats-server binary for offline backups')
      .option(
        '--no-blobs',
        'leave room blobs out of the archive (they are in by default; `backup inspect` says which)'
      )
      .addOption(outputOption()),
    { timeoutMs: 600_000, timeoutLabel: '10m' }
  )
    // `backup inspect FILE -o json`: options after the subcommand are its own.
    .enablePositionalOptions()
    .action(
      action('backup', async (opts: BackupOptions) => {
        if (!opts.out) throw new CliError(EXIT_CODES.USAGE, '--out <file> is required');
        const out = resolve(opts.out);
        if (!existsSync(dirname(out)))
          throw new CliError(EXIT_CODES.USAGE, `the directory of ${out} does not exist`);
        if (existsSync(out) && !opts.force)
          throw new CliError(EXIT_CODES.FAILED, `${out} exists (add --force to replace it)`);
        const paths = dataPaths(resolve(opts.data));
        const marker = await readStoreMarker(paths.storeMarker).catch(() => null);
        let archiveKey: ArchiveKey | null;
        try {
          archiveKey = await ArchiveKey.load(opts.archiveKeyFile);
        } catch (err) {
          known(err);
        }
        if (marker?.at_rest && !archiveKey) {
          process.stderr.write(
            'membershipd backup: warning: the store is encrypted at rest but this archive will not be; ' +
              `add --archive-key-file (or ${ARCHIVE_KEY_ENV}) and keep the archive like a secret\n`
          );
        }
        const { progress, end } = terminalProgress('backing up');
        let mode: 'live' | 'offline';
        let natsServer: string | null = null;
        let sections;
        try {
          if (opts.natsUrl || (await nodeRunning(paths))) {
            mode = 'live';
            sections = await withNodeStore(opts, async ({ nc, app }) => {
              natsServer = nc.info?.server_name ?? null;
              return dumpStore({ control: nc, app }, progress, { blobs: opts.blobs });
            });
          } else {
            mode = 'offline';
            const recovered = await recoverSwap(paths);
            if (recovered) process.stderr.write(`membershipd backup: ${recovered}\n`);
            const key = await loadAtRestKey(opts.atRestKeyFile);
            const state = await checkStore(paths.storeMarker, paths.jetstreamDir, key);
            if (!state.initialized && !(await hasEntries(paths.jetstreamDir))) {
              throw new CliError(
                EXIT_CODES.FAILED,
                `no store in ${paths.dataDir} and no node running there (wrong --data?)`
              );
            }
            sections = await withOfflineStore(
              paths,
              { key, ...(opts.natsServerBin ? { natsServerBin: opts.natsServerBin } : {}) },
              (conns) => dumpStore(conns, progress, { blobs: opts.blobs })
            );
          }
        } catch (err) {
          known(err);
        } finally {
          end();
        }
        let built;
        try {
          built = await buildArchive(
            {
              sealbus_version: VERSION,
              created_at: new Date().toISOString(),
              source: {
                mode,
                data_dir: paths.dataDir,
                nats_server: natsServer,
                at_rest: marker ? marker.at_rest : null,
              },
              blobs: opts.blobs ? 'included' : 'omitted',
            },
            sections
          );
        } catch (err) {
          known(err);
        }
        const { manifest, bytes: plain } = built;
        // An archive that restore would refuse is not written at all.
        try {
          checkRestorable({
            manifest,
            sections: manifest.sections.map((section, i) => ({
              section,
              records: sections[i]!.records,
            })),
          });
        } catch (err) {
          throw new CliError(
            EXIT_CODES.FAILED,
            `the backup would not restore, nothing written: ${(err as Error).message}`
          );
        }
        const bytes = archiveKey ? sealArchive(plain, archiveKey) : plain;
        await writeArchiveFile(out, bytes);
        if (opts.output === 'json') {
          process.stdout.write(
            JSON.stringify(
              { file: out, archive_bytes: bytes.length, encrypted: archiveKey !== null, manifest },
              null,
              2
            ) + '\n'
          );
          return;
        }
        process.stdout.write(
          `wrote ${out} (${humanBytes(bytes.length)}, ${mode} backup of ${paths.dataDir}` +
            `${archiveKey ? ', encrypted' : ''})\n` +
            sectionTable(
              manifest.sections.map((s) => ({
                name: s.name,
                kind: s.kind,
                count: s.count,
                extra: `sha256 ${s.sha256.slice(0, 16)}…`,
              }))
            ) +
            `\n  ${blobSummary(manifest)}` +
            `\n  ${manifest.totals.records} records; identity files (*.id, callout.key) are not in the archive: keep them separately\n`
        );
      })
    );

  backup
    .command('inspect <file>')
    .description("verify an archive's checksums and print its manifest")
    .option('--archive-key-file <path>', `the key of an encrypted archive (or ${ARCHIVE_KEY_ENV})`)
    .addOption(outputOption())
    .action(
      action(
        'backup inspect',
        async (file: string, opts: { output: 'text' | 'json'; archiveKeyFile?: string }) => {
          let archive: VerifiedArchive & { encrypted: boolean };
          try {
            archive = await readArchive(resolve(file), await ArchiveKey.load(opts.archiveKeyFile));
          } catch (err) {
            known(err);
          }
          const m = archive.manifest;
          if (opts.output === 'json') {
            process.stdout.write(JSON.stringify(m, null, 2) + '\n');
            return;
          }
          process.stdout.write(formatManifest(resolve(file), m, archive.encrypted));
        }
      )
    );
}

export function formatManifest(file: string, m: Manifest, encrypted = false): string {
  const src = m.source;
  return (
    `${file}\n` +
    `  format     ${m.format} v${m.format_version}\n` +
    `  version    ${m.sealbus_version}\n` +
    `  created    ${m.created_at}\n` +
    `  source     ${src.mode}${src.data_dir ? `, ${src.data_dir}` : ''}${src.nats_server ? `, server ${src.nats_server}` : ''}` +
    `${src.at_rest === null ? '' : src.at_rest ? ', encrypted at rest' : ', not encrypted at rest'}\n` +
    `  encrypted  ${encrypted ? 'yes (ChaCha20-Poly1305)' : 'no'}\n` +
    `  checksums  verified\n` +
    sectionTable(
      m.sections.map((s) => ({
        name: s.name,
        kind: s.kind,
        count: s.count,
        extra: `${humanBytes(s.bytes).padStart(9)}  sha256 ${s.sha256}`,
      }))
    ) +
    `\n  ${blobSummary(m)}` +
    `\n  total      ${m.totals.records} records, ${humanBytes(m.totals.bytes)}\n`
  );
}

/** One line on whether (and how many) room blobs an archive holds. */
export function blobSummary(m: Manifest): string {
  const sections = m.sections.filter((s) => s.kind === 'blobs');
  const count = sections.reduce((n, s) => n + s.count, 0);
  const where = `${count} in ${sections.length} room${sections.length === 1 ? '' : 's'}`;
  if (m.blobs === 'included') return `blobs      included (${where})`;
  if (m.blobs === 'omitted') return 'blobs      left out (--no-blobs): a restore has no room blobs';
  return 'blobs      not recorded (an archive made before blobs existed)';
}

/** What restoring an archive without an archive key means, said every time it is done. */
const UNAUTHENTICATED_WARNING =
  'membershipd restore: warning: this archive is unauthenticated (made without an archive key). ' +
  'Its checksums only show it is intact, not who wrote it: anyone who could write or replace the file ' +
  "chose the users, admins, rooms, memberships and audit log it restores, and they become this node's truth. " +
  'Check the users and admins (membershipd user list) before serving.\n';

export function registerRestore(program: Command): void {
  program
    .command('restore')
    .description(
      'restore an archive into the store of a fresh, stopped data dir (verified before and after writing)'
    )
    .option('--data <dir>', 'the data directory to restore into', './data')
    .option('--in <file>', 'the archive (from `membershipd backup`)')
    .option('--force', 'replace a store already in --data (its data is deleted)', false)
    .option(
      '--at-rest-key-file <path>',
      `encrypt the restored store at rest with this key (or set ${AT_REST_KEY_ENV})`
    )
    .option('--archive-key-file <path>', `the key of an encrypted archive (or ${ARCHIVE_KEY_ENV})`)
    .option(
      '--allow-unauthenticated',
      'restore an archive made without an archive key (nothing proves who wrote it)',
      false
    )
    .option('--nats-server-bin <path>', 'nats-server binary')
    .addOption(outputOption())
    .action(
      action('restore', async (opts: RestoreOptions) => {
        if (!opts.in) throw new CliError(EXIT_CODES.USAGE, '--in <file> is required');
        const paths = dataPaths(resolve(opts.data));
        let archive: VerifiedArchive;
        let key;
        try {
          key = await loadAtRestKey(opts.atRestKeyFile);
          // Everything is read and verified before anything is written.
          const read = await readArchive(
            resolve(opts.in),
            await ArchiveKey.load(opts.archiveKeyFile)
          );
          archive = read;
          checkRestorable(archive);
          // Only an archive key authenticates an archive (AEAD); its
          // checksums prove nothing about who wrote it.
          if (!read.encrypted) {
            if (!opts.allowUnauthenticated) {
              throw new CliError(
                EXIT_CODES.FAILED,
                `${resolve(opts.in)} has no archive key, so nothing proves who wrote it; ` +
                  'restore it only if you know where it came from, with --allow-unauthenticated (nothing was changed)'
              );
            }
            process.stderr.write(UNAUTHENTICATED_WARNING);
          }
          if (archive.manifest.source.at_rest && !key) {
            process.stderr.write(
              'membershipd restore: warning: the archive comes from a store encrypted at rest; ' +
                'this restore is not (add --at-rest-key-file)\n'
            );
          }
          if (await nodeRunning(paths))
            throw new OfflineError(`a node is running on ${paths.dataDir}; stop it first`);
        } catch (err) {
          known(err);
        }
        // A restore killed half-way through its swap is finished or undone first.
        const recovered = await recoverSwap(paths);
        if (recovered) process.stderr.write(`membershipd restore: ${recovered}\n`);
        const hasStore =
          (await readStoreMarker(paths.storeMarker).catch(() => true)) !== null ||
          (await hasEntries(paths.jetstreamDir));
        if (hasStore && !opts.force) {
          throw new CliError(
            EXIT_CODES.FAILED,
            `${paths.dataDir} already holds a store; restore into a fresh data dir, or add --force to replace it`
          );
        }
        // Restored into a staging store beside the real one and swapped in
        // only once read back: an interrupted or failed restore leaves the
        // data dir as it was (the staging dir is ignored by serve and
        // cleared by the next restore).
        const { stage } = swapPaths(paths);
        await rm(stage, { recursive: true, force: true });
        const { progress, end } = terminalProgress('restoring');
        let restored: RestoredSection[];
        let verified: ReadBack[];
        try {
          ({ restored, verified } = await withOfflineStore(
            paths,
            {
              key,
              storeDir: stage,
              ...(opts.natsServerBin ? { natsServerBin: opts.natsServerBin } : {}),
            },
            async (conns) => {
              const restored = await loadStore(conns, archive, {
                replicas: 1,
                ...(progress ? { progress } : {}),
              });
              return { restored, verified: await verifyAgainst(conns, archive) };
            }
          ));
          const bad = verified.filter((v) => !v.ok).map((v) => `${v.name} (${v.difference})`);
          if (bad.length > 0)
            throw new ArchiveError(`read-back differs from the archive in ${bad.join(', ')}`);
        } catch (err) {
          await rm(stage, { recursive: true, force: true }).catch(() => {});
          end();
          if (err instanceof CliError) throw err;
          throw new CliError(
            EXIT_CODES.FAILED,
            `restore failed, nothing in ${paths.dataDir} was changed: ${(err as Error).message}`
          );
        }
        // The restored nonces bucket lacks the nonces the node recorded after
        // the backup: the next start refuses requests signed before it
        // (written first, so that no swap happens without it).
        await writeFile(
          paths.restoredMarker,
          JSON.stringify({ restored_at: new Date().toISOString() }) + '\n',
          { mode: 0o600 }
        );
        // The swap: a process killed at any step leaves the old store or the
        // new one, whole (the next start finishes or undoes it).
        await swapIn(paths, key);
        end();
        const report = {
          data_dir: paths.dataDir,
          archive: resolve(opts.in),
          created_at: archive.manifest.created_at,
          at_rest: key !== null,
          verified: true,
          sections: restored,
        };
        if (opts.output === 'json') {
          process.stdout.write(JSON.stringify(report, null, 2) + '\n');
          return;
        }
        process.stdout.write(
          `restored ${report.archive} (backup of ${archive.manifest.created_at}) into ${paths.dataDir}` +
            `${key ? ', encrypted at rest' : ''}\n` +
            sectionTable(
              restored.map((s) => ({
                name: s.name,
                kind: s.kind,
                count: s.count,
                extra: 'read back, identical',
              }))
            ) +
            `\n  identity files are not restored: copy admin.id (and, for a cluster node, callout.key) from your secure copy before serving\n`
        );
      })
    );
}
