/**
 * The harden runner: reads a snapshot, plans, refuses what would lock everyone out,
 * then applies the plan with real tools in an order that is safe by construction:
 * group, user, docker socket, ~kamal/.ssh and authorized_keys first, then a check that
 * kamal can log in with the deploy keys, and only then the sshd files, judged by sshd
 * itself (`-t`, then `-T -C` for root and kamal), and the reload. Before the first
 * change the state of everything the plan touches is journaled on disk (journal.ts);
 * any failed check rolls back files and accounts, and a run killed half-way is rolled
 * back or finished when the agent starts again (recover.ts).
 */
import { chmod, chown, mkdir } from 'node:fs/promises';
import { posix } from 'node:path';
import type { CommandParams, ErrorKey } from '@vmkit/protocol';
import { parseGroup, parsePasswd } from './accounts.ts';
import { execTool, tail } from './exec.ts';
import type { ExecFn } from './exec.ts';
import { writeFileAtomic } from './files.ts';
import { HardenJournal, clearHardenJournal, readHardenJournal } from './journal.ts';
import { checkKamalKeys } from './keys-check.ts';
import { planHarden } from './plan.ts';
import { recoverHarden } from './recover.ts';
import { reloadSshd } from './reload.ts';
import { rollback } from './rollback.ts';
import { rulesFor } from './ssh-policy.ts';
import { readText, statOf, takeSnapshot } from './snapshot.ts';
import { checkEffective, effective, validate } from './sshd.ts';
import type { SshdTool } from './sshd.ts';
import { HARDEN_GROUP, HARDEN_HOME, HARDEN_USER, defaultPaths, underRoot } from './types.ts';
import type { Action, HardenOutput, HardenPaths, HardenPlan, Owner, PlannedStep, StepName, StepReport } from './types.ts';

export interface HardenEnv {
  /** Root of the file system to harden ('/' in production; a fixture tree in tests). */
  root?: string;
  paths?: HardenPaths;
  /** Create/fix the docker group and kamal user with groupadd/useradd/usermod (default: root === '/'). */
  manageAccounts?: boolean;
  /** 'auto' reloads the running sshd; 'skip' leaves it (default: 'auto' only when root is '/'). */
  reload?: 'auto' | 'skip';
  sshdBinary?: string;
  /** Extra arguments for every sshd call (tests: `-h <temp host key>`). */
  sshdArgs?: readonly string[];
  exec?: ExecFn;
  /** Where the run journals the state before its first change (the agent's state dir); none: memory only. */
  journalDir?: string;
  /** The command this run serves, recorded in the journal so a restart can answer it. */
  commandId?: string | null;
  /**
   * Called at every step boundary once it is journaled. Only `vmkit-agent run
   * --test-stop-at-harden-steps` sets it (crash tests); the systemd unit never does.
   */
  onBoundary?: (step: string) => void;
}

/** Steps that cannot lock anyone out; every other step waits for the keys check. */
const ACCOUNT_PHASE: readonly string[] = ['group_docker', 'user_kamal', 'docker_socket', 'ssh_dir', 'authorized_keys'] satisfies StepName[];
/** Steps applied only when accounts are managed (the real root). */
const ACCOUNT_ONLY: readonly string[] = ['group_docker', 'user_kamal'] satisfies StepName[];

/**
 * Every path the steps may change, first change first: what each action names, the
 * parent a write may create, and the home useradd/usermod make. New actions in the
 * plan are covered without touching the journal.
 */
function touchedPaths(steps: readonly PlannedStep[], paths: HardenPaths): string[] {
  const out: string[] = [];
  for (const s of steps) {
    for (const a of s.actions) {
      if (a.kind === 'exec') {
        if (a.file === 'useradd' || a.file === 'usermod') out.push(underRoot(paths.root, HARDEN_HOME));
        continue;
      }
      if (a.kind === 'write') out.push(posix.dirname(a.path));
      out.push(a.path);
    }
  }
  return out;
}

export interface HardenProgress {
  step: string;
  state: 'started' | 'done' | 'failed' | 'skipped';
  message?: string;
  detail?: Record<string, unknown>;
}

export type HardenReport = (progress: HardenProgress) => void;

export type HardenOutcome =
  | { ok: true; output: HardenOutput }
  | { ok: false; error: { key: ErrorKey; message: string }; output: HardenOutput };

function stepReports(plan: HardenPlan, applied: boolean, manageAccounts: boolean): StepReport[] {
  return plan.steps.map((s) => {
    const accountStep = s.step === 'group_docker' || s.step === 'user_kamal';
    const changed = s.changed && applied && (manageAccounts || !accountStep);
    const r: StepReport = { step: s.step, changed };
    if (s.before !== undefined) r.before = s.before;
    if (s.after !== undefined) r.after = s.after;
    if (s.detail !== undefined) r.detail = s.detail;
    if (!applied && s.changed) r.detail = [`would change`, s.detail].filter(Boolean).join('; ');
    return r;
  });
}

function dockerState(plan: HardenPlan): HardenOutput['docker'] {
  const d = plan.steps.find((s) => s.step === 'docker_socket')?.detail ?? '';
  return d.includes('not_installed') ? 'not_installed' : d.includes('not_running') ? 'not_running' : 'ok';
}

async function resolveOwner(paths: HardenPaths, owner: Owner): Promise<{ uid: number; gid: number }> {
  const users = parsePasswd(await readText(paths.passwd));
  const groups = parseGroup(await readText(paths.group));
  const uid = owner.user.startsWith('#') ? Number(owner.user.slice(1)) : users.find((u) => u.name === owner.user)?.uid;
  const gid = groups.find((g) => g.name === owner.group)?.gid;
  if (uid === undefined || !Number.isInteger(uid)) throw new Error(`user ${owner.user} does not exist in ${paths.passwd}`);
  if (gid === undefined) throw new Error(`group ${owner.group} does not exist in ${paths.group}`);
  return { uid, gid };
}

class StepFailure extends Error {
  readonly key: ErrorKey;
  readonly check: string;
  constructor(
    key: ErrorKey,
    check: string,
    message: string,
  ) {
    super(message);
    this.key = key;
    this.check = check;
  }
}

/** Re-checked right before each change: the plan's view may be stale, and root must not follow a link. */
async function refuseLinks(path: string): Promise<void> {
  for (const p of [path, posix.dirname(path)]) {
    if ((await statOf(p))?.kind === 'symlink') throw new StepFailure('command_failed', 'apply', `${p} is a symbolic link; refusing to change it`);
  }
}

async function applyAction(action: Action, paths: HardenPaths, exec: ExecFn): Promise<void> {
  if (action.kind !== 'exec') await refuseLinks(action.path);
  switch (action.kind) {
    case 'exec': {
      const r = await exec(action.file, action.args);
      if (r.code !== 0) throw new StepFailure('command_failed', action.file, `${action.file} ${action.args.join(' ')} failed: ${tail(r.stderr)}`);
      return;
    }
    case 'mkdir': {
      const { uid, gid } = await resolveOwner(paths, action.owner);
      await mkdir(action.path, { mode: action.mode });
      await chown(action.path, uid, gid);
      await chmod(action.path, action.mode);
      return;
    }
    case 'write': {
      // sshd_config.d may be missing where the Include names it (glob matches nothing).
      const parent = posix.dirname(action.path);
      if ((await statOf(parent)) === null) {
        await mkdir(parent, { mode: 0o755 });
      }
      const before = await statOf(action.path);
      const { uid, gid } =
        action.owner === 'keep'
          ? { uid: before?.uid ?? 0, gid: before?.gid ?? 0 }
          : await resolveOwner(paths, action.owner);
      await writeFileAtomic(action.path, action.content, action.mode, uid, gid);
      return;
    }
    case 'chown': {
      const { uid, gid } = await resolveOwner(paths, action.owner);
      await chown(action.path, uid, gid);
      return;
    }
    case 'chmod': {
      await chmod(action.path, action.mode);
      return;
    }
  }
}

/**
 * Runs the `harden` command. `report` receives progress per step; the outcome is
 * either the output (status hardened / already_hardened) or an error key with the
 * output describing what was checked and restored.
 */
export async function runHarden(params: CommandParams<'harden'>, env: HardenEnv = {}, report: HardenReport = () => {}): Promise<HardenOutcome> {
  const root = env.root ?? env.paths?.root ?? '/';
  const paths = env.paths ?? defaultPaths(root);
  const manageAccounts = env.manageAccounts ?? root === '/';
  const reloadMode = env.reload ?? (root === '/' ? 'auto' : 'skip');
  if (manageAccounts && root !== '/') throw new Error('accounts can only be managed on the real root; pass manageAccounts: false');
  const exec = env.exec ?? execTool;
  const tool: SshdTool = { exec, binary: env.sshdBinary ?? '/usr/sbin/sshd', extraArgs: env.sshdArgs ?? [], config: paths.sshdConfig };

  // sshd -t/-T refuse to run without the privilege-separation directory, which the ssh
  // unit normally creates at start (absent under socket activation until first use).
  if (!params.dry_run && (await statOf(paths.privsepDir)) === null) await mkdir(paths.privsepDir, { mode: 0o755 });

  report({ step: 'plan', state: 'started' });
  const current = await effective(tool, HARDEN_USER);
  const snapshot = await takeSnapshot(paths, current.ok ? current.config : null);
  const sshPolicy = params.ssh_policy ?? true;
  const plan = planHarden(snapshot, { deployKeys: params.deploy_keys, manageAccounts, sshPolicy });
  const notes: string[] = [];
  if (!current.ok) notes.push(`sshd -T could not read the current configuration (${current.message}); the lockout guard checked keys and shell only`);
  const output = (status: HardenOutput['status'], applied: boolean, extra: Partial<HardenOutput> = {}): HardenOutput => ({
    status,
    dry_run: params.dry_run,
    steps: stepReports(plan, applied, manageAccounts),
    docker: dockerState(plan),
    placement: plan.placement,
    ...(notes.length > 0 ? { notes } : {}),
    ...extra,
  });
  report({ step: 'plan', state: 'done', detail: { changed: plan.changed, placement: plan.placement } });

  if (plan.lockout !== null) {
    report({ step: 'lockout_guard', state: 'failed', message: plan.lockout });
    return { ok: false, error: { key: 'lockout_risk', message: `Hardening was refused, nothing was changed: ${plan.lockout}.` }, output: output('refused', false, { failed_check: 'lockout_guard' }) };
  }
  if (plan.problems.length > 0) {
    const message = `Hardening was refused, nothing was changed: ${plan.problems.join('; ')}.`;
    report({ step: 'plan', state: 'failed', message });
    return { ok: false, error: { key: 'command_failed', message }, output: output('refused', false, { failed_check: 'plan' }) };
  }
  const applicable = plan.steps.filter((s) => s.changed && (manageAccounts || (s.step !== 'group_docker' && s.step !== 'user_kamal')));
  if (params.dry_run) {
    return { ok: true, output: output(applicable.length > 0 ? 'hardened' : 'already_hardened', false) };
  }

  // A run that died before this one is dealt with first (the daemon does this at start;
  // this covers a journal left by other means).
  if (env.journalDir !== undefined) {
    const found = await readHardenJournal(env.journalDir);
    if (found.state === 'unreadable') {
      const message = `Hardening was refused, nothing was changed: the journal of an earlier run in ${env.journalDir} is unreadable (${found.reason}); inspect and remove it.`;
      return { ok: false, error: { key: 'command_failed', message }, output: output('refused', false, { failed_check: 'journal' }) };
    }
    if (found.state === 'found') {
      await recoverHarden(found, { dir: env.journalDir, paths, exec, reload: reloadMode });
      await clearHardenJournal(env.journalDir);
    }
  }

  const accountSteps = plan.steps.filter((s) => ACCOUNT_PHASE.includes(s.step));
  // Everything else (the sshd files, whatever the plan adds) comes after the keys check.
  const sshdSteps = plan.steps.filter((s) => !ACCOUNT_PHASE.includes(s.step));
  const willApply = (s: PlannedStep) => s.changed && (manageAccounts || !ACCOUNT_ONLY.includes(s.step));
  if (applicable.length === 0) {
    const failures = await checkEffective(tool, ['root', HARDEN_USER], rulesFor(sshPolicy));
    if (failures.length > 0) {
      const message = `sshd -T shows the hardening is not in effect: ${failures.join('; ')}`;
      report({ step: 'sshd -T', state: 'failed', message });
      return { ok: false, error: { key: 'sshd_effective_check_failed', message }, output: output('failed', false, { failed_check: 'sshd -T' }) };
    }
    report({ step: 'sshd_effective', state: 'done' });
    return { ok: true, output: output('already_hardened', true) };
  }

  const sshdChanges = sshdSteps.some(willApply);
  const completed = output('hardened', true);
  if (sshdChanges) completed.steps.push({ step: 'sshd_reload', changed: reloadMode === 'auto', detail: reloadMode === 'auto' ? 'reloaded' : 'skipped' });
  let journal: HardenJournal;
  try {
    journal = await HardenJournal.begin({
      dir: env.journalDir,
      commandId: env.commandId ?? null,
      paths,
      files: touchedPaths(applicable, paths),
      accounts: manageAccounts ? { users: [{ name: HARDEN_USER, home: HARDEN_HOME }], groups: [HARDEN_GROUP, HARDEN_USER] } : null,
      output: completed,
      onBoundary: env.onBoundary,
    });
  } catch (err) {
    const message = `Hardening was refused, nothing was changed: the state before the change could not be journaled: ${(err as Error).message}`;
    report({ step: 'journal', state: 'failed', message });
    return { ok: false, error: { key: 'command_failed', message }, output: output('refused', false, { failed_check: 'journal' }) };
  }

  let reloadAttempted = false;
  const fail = async (err: StepFailure): Promise<HardenOutcome> => {
    report({ step: err.check, state: 'failed', message: err.message });
    const rb = await rollback(journal.before, paths, exec);
    // sshd was told to read the hardened files: bring it back onto the restored ones.
    if (reloadAttempted) await reloadSshd(exec, paths);
    const suffix = rb.errors.length > 0 ? ` Restoring failed for: ${rb.errors.join('; ')}` : '';
    const outcome: HardenOutcome = {
      ok: false,
      error: { key: err.key, message: `${err.message}${suffix}` },
      output: output('failed', false, { failed_check: err.check, restored: rb.restored, ...(rb.accounts.length > 0 ? { accounts_restored: rb.accounts } : {}) }),
    };
    await journal.finish({ ok: false, error: outcome.error, output: outcome.output }).catch(() => undefined);
    return outcome;
  };

  const apply = async (s: PlannedStep): Promise<void> => {
    if (!s.changed) return;
    if (!willApply(s)) {
      report({ step: s.step, state: 'skipped', message: 'accounts are not managed in this run' });
      return;
    }
    report({ step: s.step, state: 'started' });
    for (const a of s.actions) await applyAction(a, paths, exec);
    await journal.step(s.step);
    report({ step: s.step, state: 'done', ...(s.step === 'sshd_config' ? { detail: { placement: plan.placement } } : {}) });
  };

  try {
    // 1. group, user, docker socket, ~kamal/.ssh, authorized_keys: nothing here can
    //    lock anyone out, and the sshd changes below need them in place.
    for (const s of accountSteps) await apply(s);
    const keyProblems = await checkKamalKeys(paths, params.deploy_keys);
    if (keyProblems.length > 0) throw new StepFailure('command_failed', 'authorized_keys check', `${HARDEN_USER} could not log in with the deploy keys: ${keyProblems.join('; ')}`);
    await journal.step('keys_checked', { sshdTouched: sshdChanges });
    report({ step: 'authorized_keys_check', state: 'done' });

    // 2. sshd files, judged by sshd itself.
    for (const s of sshdSteps) await apply(s);
    if (sshdChanges) {
      const v = await validate(tool);
      if (!v.ok) throw new StepFailure('sshd_validation_failed', 'sshd -t', `sshd -t rejected the hardened configuration: ${v.message}`);
      await journal.step('sshd_validated');
    }
    const failures = await checkEffective(tool, ['root', HARDEN_USER], rulesFor(sshPolicy));
    if (failures.length > 0) {
      throw new StepFailure('sshd_effective_check_failed', 'sshd -T', `sshd -T shows the hardening is not in effect: ${failures.join('; ')}`);
    }
    await journal.step('checks_passed', { checksPassed: true });
    report({ step: 'sshd_effective', state: 'done' });

    // 3. the running sshd.
    let reloadHow = 'not needed';
    if (sshdChanges && reloadMode === 'auto') {
      reloadAttempted = true;
      const r = await reloadSshd(exec, paths);
      if (!r.ok) return await fail(new StepFailure('reload_failed', 'reload', r.message));
      reloadHow = r.how;
      await journal.step('sshd_reload');
    } else if (sshdChanges) reloadHow = 'skipped';
    report({ step: 'sshd_reload', state: reloadHow === 'skipped' ? 'skipped' : 'done', message: reloadHow });
    const out = output('hardened', true);
    if (sshdChanges) out.steps.push({ step: 'sshd_reload', changed: reloadHow !== 'skipped', detail: reloadHow });
    // Not recorded is harmless: a restart finds the checks passed and completes the run.
    await journal.finish({ ok: true, output: out }).catch(() => undefined);
    return { ok: true, output: out };
  } catch (err) {
    if (err instanceof StepFailure) return fail(err);
    return fail(new StepFailure('command_failed', 'apply', (err as Error).message));
  }
}
