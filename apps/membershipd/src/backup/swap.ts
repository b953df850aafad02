import { existsSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import type { DataPaths } from '../daemon/paths.js';
import { offlineHolder } from './offline.js';
import { writeStoreMarker, type AtRestKey } from '../daemon/atrest.js';

/**
 * Swapping a verified staging store in for the live one, so that a process
 * killed at any point leaves one whole store: the old one, or the new one
 * with its marker. The steps, each a rename (atomic on one filesystem):
 *
 * 1. the new store's marker is written beside the old one (`store.json.swap`);
 * 2. the old store moves aside (`jetstream` → `jetstream.replaced`);
 * 3. the staging store moves in (`jetstream.restoring` → `jetstream`);
 * 4. the new marker replaces the old (`store.json.swap` → `store.json`);
 * 5. the old store is removed (or kept where the caller says: migrate).
 *
 * `recoverSwap` finishes or undoes an interrupted swap: while the staging
 * store is still there (step 3 not done) it puts the old store back; once
 * it is in place it finishes steps 4 and 5. Every path that opens a store
 * (serve, backup, restore, migrate) runs it first.
 */
export function swapPaths(paths: DataPaths) {
  return {
    stage: `${paths.jetstreamDir}.restoring`,
    replaced: `${paths.jetstreamDir}.replaced`,
    marker: `${paths.storeMarker}.swap`,
  };
}

/** Test hook: `SEALBUS_FAILPOINT=swap-1|swap-2|swap-3` ends the process there (SIGKILL). */
function failpoint(name: string): void {
  if (process.env.SEALBUS_FAILPOINT === name) process.kill(process.pid, 'SIGKILL');
}

/**
 * Swaps the verified staging store in. `keep` names where the old store
 * goes (migrate keeps it); otherwise it is removed once the new one is in.
 */
export async function swapIn(
  paths: DataPaths,
  key: AtRestKey | null,
  keep?: string
): Promise<void> {
  const s = swapPaths(paths);
  await rm(s.replaced, { recursive: true, force: true });
  await writeStoreMarker(s.marker, key, true);
  failpoint('swap-1');
  if (existsSync(paths.jetstreamDir)) await rename(paths.jetstreamDir, s.replaced);
  failpoint('swap-2');
  await rename(s.stage, paths.jetstreamDir);
  failpoint('swap-3');
  await rename(s.marker, paths.storeMarker);
  if (keep && existsSync(s.replaced)) await rename(s.replaced, keep);
  else await rm(s.replaced, { recursive: true, force: true });
}

/**
 * Finishes or undoes a swap a killed process left half done (see above).
 * Returns what it did, or null when there was nothing to do.
 */
export async function recoverSwap(paths: DataPaths): Promise<string | null> {
  // An offline backup, restore or migration at work here: its staging is not debris.
  if ((await offlineHolder(paths)) !== null) return null;
  const s = swapPaths(paths);
  const hasMarker = existsSync(s.marker);
  const hasStage = existsSync(s.stage);
  const hasLive = existsSync(paths.jetstreamDir);
  const hasReplaced = existsSync(s.replaced);
  if (hasMarker && !hasStage && hasLive) {
    // The new store is in place: finish. The old one, if any, stays where
    // it is (a migration keeps it; nothing is deleted in a recovery).
    await rename(s.marker, paths.storeMarker);
    return hasReplaced
      ? `finished an interrupted restore: the restored store is in place, the old one is kept in ${s.replaced} (remove it when the node serves)`
      : 'finished an interrupted restore: the restored store is in place';
  }
  if (hasMarker || hasStage) {
    // The new store never moved in: put the old one back.
    if (!hasLive && hasReplaced) await rename(s.replaced, paths.jetstreamDir);
    await rm(s.stage, { recursive: true, force: true });
    await rm(s.marker, { force: true });
    return 'undid an interrupted restore: the store is as it was before it';
  }
  if (hasReplaced && !hasLive) {
    await rename(s.replaced, paths.jetstreamDir);
    return 'undid an interrupted restore: the store is as it was before it';
  }
  return null;
}
