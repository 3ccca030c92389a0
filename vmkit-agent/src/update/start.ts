import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { ExecutorOutcome } from '../executors/types.ts';
import type { Logger } from '../log.ts';
import { EXECUTABLE, pruneVersions, switchCurrent } from './layout.ts';
import type { InstallLayout } from './layout.ts';
import { readMarker, removeMarker, writeMarker } from './marker.ts';
import type { UpdateMarker } from './marker.ts';

/** A new version that has started this often without connecting is rolled back even inside its window. */
export const MAX_STARTS = 5;

/**
 * What an update in flight means for this start (decided before the journal opens):
 * - `none`: no update in flight;
 * - `confirming`: this is the new version, inside its window: the command stays
 *   running until it connects (confirm) or the window ends (roll back);
 * - `report`: the update is over (rolled back, or never switched): its outcome is the
 *   command's result, journaled now, and the marker goes once it is;
 * - `restart`: this start switched `current` back (window over, too many starts):
 *   exit at once so the old version starts.
 */
export type UpdateAtStart =
  | { kind: 'none' }
  | { kind: 'confirming'; marker: UpdateMarker; layout: InstallLayout }
  | { kind: 'report'; marker: UpdateMarker; outcome: ExecutorOutcome }
  | { kind: 'restart'; marker: UpdateMarker };

export function layoutOfMarker(marker: UpdateMarker): InstallLayout {
  return { root: marker.root, versionsDir: join(marker.root, 'versions'), current: join(marker.root, 'current') };
}

export function rolledBackOutcome(marker: UpdateMarker): ExecutorOutcome {
  return {
    status: 'failed',
    error: { key: 'update_rolled_back', message: `vmkit-agent ${marker.to_version} was rolled back to ${marker.from_version}: ${marker.reason ?? 'it did not connect in time'}` },
    output: { version: marker.from_version, attempted_version: marker.to_version, rolled_back: true },
  };
}

/** Switches back to the previous version and records why; the caller exits so it starts. */
export async function rollBack(file: string, marker: UpdateMarker, reason: string, log: Logger): Promise<UpdateMarker> {
  const next: UpdateMarker = { ...marker, state: 'rolled_back', reason };
  // Recorded before the switch: a crash in between still ends on the old version (see below).
  await writeMarker(file, next);
  const previous = join(marker.root, 'versions', marker.from_version, EXECUTABLE);
  if (!(await stat(previous).catch(() => undefined))?.isFile()) throw new Error(`cannot roll back: ${previous} is gone`);
  await switchCurrent(layoutOfMarker(marker), marker.from_version);
  log.warn('update rolled back', { from: marker.to_version, to: marker.from_version, reason });
  return next;
}

export async function updateAtStart(file: string, version: string, log: Logger, now = Date.now()): Promise<UpdateAtStart> {
  const marker = await readMarker(file);
  if (!marker) return { kind: 'none' };
  if (marker.state === 'rolled_back') {
    if (version === marker.from_version) return { kind: 'report', marker, outcome: rolledBackOutcome(marker) };
    // A crash between recording the rollback and switching back: finish the switch.
    await switchCurrent(layoutOfMarker(marker), marker.from_version);
    return { kind: 'restart', marker };
  }
  if (version === marker.from_version) {
    // The switch never happened (a crash right after the marker) or someone switched back.
    return { kind: 'report', marker: { ...marker, state: 'rolled_back' }, outcome: rolledBackOutcome({ ...marker, reason: `the agent started as ${version} again before ${marker.to_version} ever ran` }) };
  }
  if (version !== marker.to_version) {
    return { kind: 'report', marker, outcome: { status: 'failed', error: { key: 'command_interrupted', message: `the agent started as ${version}, neither ${marker.from_version} nor ${marker.to_version}` } } };
  }
  const starts = marker.starts + 1;
  if (now > marker.confirm_by) {
    return { kind: 'restart', marker: await rollBack(file, marker, `it did not connect within ${marker.confirm_by - marker.switched_at} ms`, log) };
  }
  if (starts > MAX_STARTS) {
    return { kind: 'restart', marker: await rollBack(file, marker, `it started ${MAX_STARTS} times without connecting`, log) };
  }
  const counted = { ...marker, starts };
  await writeMarker(file, counted);
  return { kind: 'confirming', marker: counted, layout: layoutOfMarker(marker) };
}

/** The new version connected: the update is done; the version before it stays for a manual rollback. */
export async function confirmUpdate(file: string, marker: UpdateMarker, log: Logger): Promise<ExecutorOutcome> {
  const removed = await pruneVersions(layoutOfMarker(marker), [marker.to_version, marker.from_version]).catch((err: unknown) => {
    log.warn('old versions not pruned', { error: (err as Error).message });
    return [];
  });
  log.info('update confirmed: connected on the new version', { version: marker.to_version, previous: marker.from_version, pruned: removed });
  return {
    status: 'succeeded',
    output: { version: marker.to_version, previous_version: marker.from_version, changed: true, starts: marker.starts, pruned: removed },
  };
}

export { removeMarker };
