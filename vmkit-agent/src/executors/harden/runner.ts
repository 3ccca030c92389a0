/**
 * The harden runner: reads a snapshot, plans, refuses what would lock everyone out,
 * then applies the plan with real tools. sshd files change first and are judged by
 * sshd itself (`-t`, then `-T -C` for root and kamal) before any account changes;
 * any failed check restores every touched file exactly as it was.
 */
import { chmod, chown, mkdir } from 'node:fs/promises';
import { posix } from 'node:path';
import type { CommandParams, ErrorKey } from '@vmkit/protocol';
import { parseGroup, parsePasswd } from './accounts.ts';
import { execTool, tail } from './exec.ts';
import type { ExecFn } from './exec.ts';
import { FileJournal, writeFileAtomic } from './files.ts';
import { planHarden } from './plan.ts';
import { reloadSshd } from './reload.ts';
import { readText, statOf, takeSnapshot } from './snapshot.ts';
import { checkEffective, effective, validate } from './sshd.ts';
import type { SshdTool } from './sshd.ts';
import { HARDEN_USER, defaultPaths } from './types.ts';
import type { Action, HardenOutput, HardenPaths, HardenPlan, Owner, PlannedStep, StepReport } from './types.ts';

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
  constructor(
    readonly key: ErrorKey,
    readonly check: string,
    message: string,
  ) {
    super(message);
  }
}

/** Re-checked right before each change: the plan's view may be stale, and root must not follow a link. */
async function refuseLinks(path: string): Promise<void> {
  for (const p of [path, posix.dirname(path)]) {
    if ((await statOf(p))?.kind === 'symlink') throw new StepFailure('command_failed', 'apply', `${p} is a symbolic link; refusing to change it`);
  }
}

async function applyAction(action: Action, paths: HardenPaths, exec: ExecFn, journal: FileJournal): Promise<void> {
  if (action.kind !== 'exec') await refuseLinks(action.path);
  switch (action.kind) {
    case 'exec': {
      const r = await exec(action.file, action.args);
      if (r.code !== 0) throw new StepFailure('command_failed', action.file, `${action.file} ${action.args.join(' ')} failed: ${tail(r.stderr)}`);
      return;
    }
    case 'mkdir': {
      await journal.backup(action.path);
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
        await journal.backup(parent);
        await mkdir(parent, { mode: 0o755 });
      }
      await journal.backup(action.path);
      const before = await statOf(action.path);
      const { uid, gid } =
        action.owner === 'keep'
          ? { uid: before?.uid ?? 0, gid: before?.gid ?? 0 }
          : await resolveOwner(paths, action.owner);
      await writeFileAtomic(action.path, action.content, action.mode, uid, gid);
      return;
    }
    case 'chown': {
      await journal.backup(action.path);
      const { uid, gid } = await resolveOwner(paths, action.owner);
      await chown(action.path, uid, gid);
      return;
    }
    case 'chmod': {
      await journal.backup(action.path);
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
  const plan = planHarden(snapshot, { deployKeys: params.deploy_keys, manageAccounts });
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

  const journal = new FileJournal();
  const fail = async (err: StepFailure): Promise<HardenOutcome> => {
    report({ step: err.check, state: 'failed', message: err.message });
    const { restored, errors } = await journal.restore();
    const suffix = errors.length > 0 ? ` Restoring failed for: ${errors.join('; ')}` : '';
    return {
      ok: false,
      error: { key: err.key, message: `${err.message}${suffix}` },
      output: output('failed', false, { failed_check: err.check, restored }),
    };
  };

  const byName = (name: PlannedStep['step']) => plan.steps.find((s) => s.step === name);
  try {
    // 1. sshd files, judged by sshd before anything else changes.
    const sshdStep = byName('sshd_config');
    if (sshdStep?.changed) {
      report({ step: 'sshd_config', state: 'started' });
      for (const a of sshdStep.actions) await applyAction(a, paths, exec, journal);
      const v = await validate(tool);
      if (!v.ok) throw new StepFailure('sshd_validation_failed', 'sshd -t', `sshd -t rejected the hardened configuration: ${v.message}`);
      report({ step: 'sshd_config', state: 'done', detail: { placement: plan.placement } });
    }
    const failures = await checkEffective(tool, ['root', HARDEN_USER]);
    if (failures.length > 0) {
      throw new StepFailure('sshd_effective_check_failed', 'sshd -T', `sshd -T shows the hardening is not in effect: ${failures.join('; ')}`);
    }
    report({ step: 'sshd_effective', state: 'done' });

    // 2. accounts, docker socket, keys.
    for (const name of ['group_docker', 'user_kamal', 'docker_socket', 'ssh_dir', 'authorized_keys'] as const) {
      const s = byName(name);
      if (!s?.changed) continue;
      if (!manageAccounts && (name === 'group_docker' || name === 'user_kamal')) {
        report({ step: name, state: 'skipped', message: 'accounts are not managed in this run' });
        continue;
      }
      report({ step: name, state: 'started' });
      for (const a of s.actions) await applyAction(a, paths, exec, journal);
      report({ step: name, state: 'done' });
    }

    // 3. the running sshd.
    let reloadHow = 'not needed';
    if (sshdStep?.changed && reloadMode === 'auto') {
      const r = await reloadSshd(exec, paths);
      if (!r.ok) {
        const outcome = await fail(new StepFailure('reload_failed', 'reload', r.message));
        await reloadSshd(exec, paths); // best effort: back onto the restored config
        return outcome;
      }
      reloadHow = r.how;
    } else if (sshdStep?.changed) reloadHow = 'skipped';
    report({ step: 'sshd_reload', state: reloadHow === 'skipped' ? 'skipped' : 'done', message: reloadHow });
    const changed = applicable.length > 0;
    const out = output(changed ? 'hardened' : 'already_hardened', true);
    if (sshdStep?.changed) out.steps.push({ step: 'sshd_reload', changed: reloadHow !== 'skipped', detail: reloadHow });
    return { ok: true, output: out };
  } catch (err) {
    if (err instanceof StepFailure) return fail(err);
    return fail(new StepFailure('command_failed', 'apply', (err as Error).message));
  }
}
