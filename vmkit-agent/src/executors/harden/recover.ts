/**
 * What the agent does at start with a harden journal a killed run left behind: when
 * every check had passed (keys, `sshd -t`, `sshd -T`) only the reload was missing, so
 * the run is completed; otherwise everything is rolled back (files byte for byte,
 * created accounts deleted, sshd reloaded onto the restored files). Either way the
 * outcome is recorded in the journal first, so a second crash here repeats the same
 * decision, and it becomes the result of the interrupted command.
 */
import type { ErrorKey } from '@vmkit/protocol';
import type { Logger } from '../../log.ts';
import type { ExecFn } from './exec.ts';
import { HardenJournal, clearHardenJournal, readHardenJournal } from './journal.ts';
import type { JournalBefore, JournalFinished, JournalProgress } from './journal.ts';
import { reloadSshd } from './reload.ts';
import { rollback } from './rollback.ts';
import type { HardenOutput, HardenPaths, StepReport } from './types.ts';

export interface RecoveryEnv {
  dir: string;
  paths: HardenPaths;
  exec: ExecFn;
  reload: 'auto' | 'skip';
}

export interface Recovery {
  commandId: string | null;
  /** `finished`: the run had ended before the agent stopped; its own outcome stands (a success is marked completed). */
  action: 'rolled_back' | 'completed' | 'finished';
  reason: string;
  outcome: JournalFinished;
}

function lastStep(progress: JournalProgress): string {
  return progress.steps.at(-1) ?? 'none';
}

async function rollBack(journal: HardenJournal, env: RecoveryEnv, reason: string): Promise<Recovery> {
  const { before, progress } = journal;
  const rb = await rollback(before, env.paths, env.exec);
  if (progress.sshd_touched && env.reload === 'auto') {
    const r = await reloadSshd(env.exec, env.paths);
    if (!r.ok) rb.errors.push(`reload: ${r.message}`);
  }
  const base = before.output as unknown as HardenOutput;
  const output: HardenOutput = {
    status: 'rolled_back',
    dry_run: false,
    steps: base.steps.map((s: StepReport) => ({ ...s, changed: false })),
    docker: base.docker,
    placement: base.placement,
    restored: rb.restored,
    ...(rb.accounts.length > 0 ? { accounts_restored: rb.accounts } : {}),
    recovery: { action: 'rolled_back', reason },
  };
  const undone = [rb.restored.length > 0 ? `${rb.restored.length} path(s) restored` : 'no file had changed', ...rb.accounts].join(', ');
  const failed = rb.errors.length > 0 ? ` Restoring failed for: ${rb.errors.join('; ')}` : '';
  const outcome: JournalFinished = {
    ok: false,
    error: {
      key: 'command_interrupted' satisfies ErrorKey,
      message: `The agent stopped in the middle of hardening (${reason}); at its next start it rolled every change back: ${undone}.${failed}`.slice(0, 2048),
    },
    output,
  };
  await journal.finish(outcome);
  return { commandId: before.command_id, action: 'rolled_back', reason, outcome };
}

/** Decides and carries out the recovery of one journal found on disk. */
export async function recoverHarden(found: { before: JournalBefore; progress: JournalProgress }, env: RecoveryEnv): Promise<Recovery> {
  const journal = HardenJournal.resume(env.dir, found.before, found.progress);
  const { before, progress } = found;
  if (progress.finished) {
    // Its own outcome stands; a success says how it reached the command's result.
    const reason = 'the run had finished before the agent stopped';
    const f = progress.finished;
    const outcome = f.ok ? { ...f, output: { ...f.output, recovery: { action: 'completed', reason } } } : f;
    return { commandId: before.command_id, action: 'finished', reason, outcome };
  }
  if (!progress.checks_passed) {
    return rollBack(journal, env, `last step journaled: ${lastStep(progress)}; not every check had passed`);
  }
  let how = 'no sshd change to load';
  if (progress.sshd_touched && env.reload === 'auto') {
    const r = await reloadSshd(env.exec, env.paths);
    if (!r.ok) return rollBack(journal, env, `every check had passed but the reload at restart failed: ${r.message}`);
    how = r.how;
  } else if (progress.sshd_touched) how = 'reload skipped';
  const reason = `every check had passed (last step journaled: ${lastStep(progress)}); the restart finished the run (${how})`;
  const base = before.output as unknown as HardenOutput;
  const output: HardenOutput = { ...base, status: 'hardened', recovery: { action: 'completed', reason } };
  const outcome: JournalFinished = { ok: true, output };
  await journal.finish(outcome);
  return { commandId: before.command_id, action: 'completed', reason, outcome };
}

/**
 * The daemon's start-up step: recovers a journal left in `env.dir`, logs what it did,
 * and returns it (null when there was none). The caller clears the journal once the
 * interrupted command's result is journaled.
 */
export async function recoverHardenAtStart(env: RecoveryEnv, log: Logger): Promise<Recovery | null> {
  const found = await readHardenJournal(env.dir);
  if (found.state === 'none') return null;
  if (found.state === 'unreadable') {
    // Left in place: hardening refuses to run until someone looks at it.
    log.error('harden journal unreadable; hardening is refused until it is inspected and removed', { dir: env.dir, reason: found.reason });
    return null;
  }
  let r: Recovery;
  try {
    r = await recoverHarden(found, env);
  } catch (err) {
    // Left in place: the next harden run tries again before it changes anything.
    log.error('harden journal could not be recovered; the next harden run retries first', { dir: env.dir, error: (err as Error).message });
    return null;
  }
  const fields = { command_id: r.commandId, reason: r.reason, ...(r.outcome.error ? { message: r.outcome.error.message } : {}) };
  if (r.action === 'rolled_back') log.warn('harden was interrupted by an agent restart: rolled back every change', fields);
  else if (r.action === 'completed') log.warn('harden was interrupted by an agent restart after every check had passed: completed it', fields);
  else log.info('harden journal of a finished run found; clearing it', fields);
  return r;
}

export { clearHardenJournal };
