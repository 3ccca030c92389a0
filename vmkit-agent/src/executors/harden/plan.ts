/**
 * The harden planner: snapshot in, plan out, no I/O. Every step says whether it
 * would change anything, with a short before/after, and the actions the runner
 * will take.
 */
import { posix } from 'node:path';
import { groupsOf, parseGroup, parsePasswd, shadowPassword } from './accounts.ts';
import { mergeAuthorizedKeys } from './authorized-keys.ts';
import { lockoutReason } from './lockout.ts';
import { MIN_MODULUS_BITS, rulesFor, strongModuli } from './ssh-policy.ts';
import { planSshd } from './sshd-plan.ts';
import { HARDEN_GROUP, HARDEN_HOME, HARDEN_SHELL, HARDEN_USER } from './types.ts';
import type { Action, FileStat, HardenPlan, Owner, PlannedStep, SystemSnapshot } from './types.ts';

export interface PlanOptions {
  deployKeys: readonly string[];
  /** When false the group/user steps are reported but never applied (fixture runs). */
  manageAccounts: boolean;
  /** The SSH crypto, forwarding and login-limit policy (ssh-policy.ts); default on. */
  sshPolicy?: boolean;
}

const KAMAL: Owner = { user: HARDEN_USER, group: HARDEN_USER };
const mode = (m: number) => '0' + m.toString(8).padStart(3, '0');

function describeStat(s: FileStat | null, owner: string): string {
  if (!s) return 'absent';
  return `${s.kind} ${mode(s.mode)} ${owner}`;
}

export function planHarden(snap: SystemSnapshot, opts: PlanOptions): HardenPlan {
  const steps: PlannedStep[] = [];
  const problems: string[] = [];
  const users = parsePasswd(snap.passwd);
  const groups = parseGroup(snap.group);
  const kamal = users.find((u) => u.name === HARDEN_USER);
  const docker = groups.find((g) => g.name === HARDEN_GROUP);
  const skipped = opts.manageAccounts ? undefined : 'accounts are not managed in this run';

  // group docker
  steps.push(
    docker
      ? { step: 'group_docker', changed: false, before: `present (gid ${docker.gid})`, after: `present (gid ${docker.gid})`, actions: [] }
      : {
          step: 'group_docker',
          changed: true,
          before: 'absent',
          after: 'present',
          ...(skipped ? { detail: skipped } : {}),
          actions: [{ kind: 'exec', file: 'groupadd', args: ['--system', HARDEN_GROUP] }],
        },
  );

  // user kamal: created once, fixed up with usermod afterwards, never recreated.
  const kamalGroups = groupsOf(kamal, groups);
  const usePam = (snap.effectiveKamal?.get('usepam') ?? ['yes'])[0] !== 'no';
  // Without PAM, sshd refuses accounts whose password is locked ("!"), even for keys.
  const locked = !usePam && (shadowPassword(snap.shadow, HARDEN_USER) ?? '!').startsWith('!');
  if (!kamal) {
    const args = ['--create-home', '--home-dir', HARDEN_HOME, '--shell', HARDEN_SHELL, '--user-group', '--groups', HARDEN_GROUP];
    if (!usePam) args.push('--password', '*');
    steps.push({
      step: 'user_kamal',
      changed: true,
      before: 'absent',
      after: `home ${HARDEN_HOME}, shell ${HARDEN_SHELL}, groups ${HARDEN_USER},${HARDEN_GROUP}`,
      ...(skipped ? { detail: skipped } : {}),
      actions: [{ kind: 'exec', file: 'useradd', args: [...args, HARDEN_USER] }],
    });
  } else {
    const fix: string[] = [];
    if (kamal.home !== HARDEN_HOME) fix.push('--home', HARDEN_HOME, '--move-home');
    if (kamal.shell !== HARDEN_SHELL) fix.push('--shell', HARDEN_SHELL);
    if (!kamalGroups.includes(HARDEN_GROUP)) fix.push('--append', '--groups', HARDEN_GROUP);
    if (locked) fix.push('--password', '*');
    const actions: Action[] = fix.length > 0 ? [{ kind: 'exec', file: 'usermod', args: [...fix, HARDEN_USER] }] : [];
    const homeMissing = snap.kamal.homeStat === null && kamal.home === HARDEN_HOME;
    if (homeMissing) actions.push({ kind: 'mkdir', path: posix.dirname(snap.kamal.sshDir), mode: 0o750, owner: KAMAL });
    const after = `home ${HARDEN_HOME}, shell ${HARDEN_SHELL}, groups ${[...new Set([...kamalGroups, HARDEN_GROUP])].join(',')}`;
    steps.push({
      step: 'user_kamal',
      changed: actions.length > 0,
      before: `home ${kamal.home}${homeMissing ? ' (missing)' : ''}, shell ${kamal.shell}, groups ${kamalGroups.join(',')}`,
      after,
      ...(skipped && actions.length > 0 ? { detail: skipped } : {}),
      actions,
    });
  }

  // docker socket: reachable by the group when Docker is installed.
  const sock = snap.docker.socketStat;
  if (!sock) {
    steps.push({
      step: 'docker_socket',
      changed: false,
      detail: snap.docker.daemonInstalled ? 'docker: not_running (no socket yet; dockerd gives it to group docker when it starts)' : 'docker: not_installed',
      actions: [],
    });
  } else {
    const actions: Action[] = [];
    const groupOk = docker !== undefined && sock.gid === docker.gid;
    if (!groupOk) actions.push({ kind: 'chown', path: snap.paths.dockerSocket, owner: { user: '#' + String(sock.uid), group: HARDEN_GROUP } });
    if ((sock.mode & 0o060) !== 0o060) actions.push({ kind: 'chmod', path: snap.paths.dockerSocket, mode: sock.mode | 0o060 });
    steps.push({
      step: 'docker_socket',
      changed: actions.length > 0,
      before: `gid ${sock.gid}, mode ${mode(sock.mode)}`,
      after: `group ${HARDEN_GROUP}, mode ${mode(sock.mode | 0o060)}`,
      actions,
    });
  }

  // ~kamal/.ssh and authorized_keys, owned by kamal, 0700/0600. Symlinks are refused:
  // root must never follow a link that kamal controls.
  const kamalUid = kamal?.uid;
  const kamalGid = kamal?.gid;
  const ownedRight = (s: FileStat) => kamalUid !== undefined && s.uid === kamalUid && s.gid === kamalGid;
  const dirStat = snap.kamal.sshDirStat;
  if (dirStat && dirStat.kind !== 'dir') problems.push(`${snap.kamal.sshDir} is a ${dirStat.kind}, not a directory; refusing to write through it`);
  const dirActions: Action[] = [];
  if (!dirStat) dirActions.push({ kind: 'mkdir', path: snap.kamal.sshDir, mode: 0o700, owner: KAMAL });
  else {
    if (!ownedRight(dirStat)) dirActions.push({ kind: 'chown', path: snap.kamal.sshDir, owner: KAMAL });
    if (dirStat.mode !== 0o700) dirActions.push({ kind: 'chmod', path: snap.kamal.sshDir, mode: 0o700 });
  }
  steps.push({
    step: 'ssh_dir',
    changed: dirActions.length > 0,
    before: describeStat(dirStat, dirStat ? `${dirStat.uid}:${dirStat.gid}` : ''),
    after: `dir 0700 ${HARDEN_USER}:${HARDEN_USER}`,
    actions: dirActions,
  });

  const keyStat = snap.kamal.authorizedKeysStat;
  if (keyStat && keyStat.kind !== 'file') problems.push(`${snap.kamal.authorizedKeysPath} is a ${keyStat.kind}, not a file; refusing to write through it`);
  const merge = mergeAuthorizedKeys(snap.kamal.authorizedKeys, opts.deployKeys);
  const keyActions: Action[] = [];
  if (merge.added > 0 || !keyStat) {
    keyActions.push({ kind: 'write', path: snap.kamal.authorizedKeysPath, content: merge.content, mode: 0o600, owner: KAMAL });
  } else {
    if (!ownedRight(keyStat)) keyActions.push({ kind: 'chown', path: snap.kamal.authorizedKeysPath, owner: KAMAL });
    if (keyStat.mode !== 0o600) keyActions.push({ kind: 'chmod', path: snap.kamal.authorizedKeysPath, mode: 0o600 });
  }
  steps.push({
    step: 'authorized_keys',
    changed: keyActions.length > 0,
    before: keyStat ? `${merge.existing} key(s), ${mode(keyStat.mode)}` : 'absent',
    after: `${merge.total} key(s), 0600 ${HARDEN_USER}:${HARDEN_USER}`,
    ...(merge.added > 0 || merge.rejected > 0 ? { detail: `added ${merge.added}${merge.rejected > 0 ? `, ${merge.rejected} invalid key(s) ignored` : ''}` } : {}),
    actions: keyActions,
  });

  // sshd
  const sshPolicy = opts.sshPolicy ?? true;
  const sshd = planSshd(snap.sshd, rulesFor(sshPolicy));
  problems.push(...sshd.problems);
  const sshdActions: Action[] = sshd.writes.map((w) => ({
    kind: 'write',
    path: w.path,
    content: w.content,
    mode: w.create ? 0o644 : (snap.sshdStats.get(w.path)?.mode ?? 0o644),
    owner: w.create ? { user: 'root', group: 'root' } : 'keep',
  }));
  const detailParts = [`placement ${sshd.placement}`, ...sshd.writes.map((w) => `${w.create ? 'create' : 'rewrite'} ${w.path}`)];
  if (sshd.neutralised.length > 0) detailParts.push(`Match lines commented out: ${sshd.neutralised.join('; ')}`);
  detailParts.push(sshPolicy ? 'ssh policy on' : 'ssh policy off: crypto, forwarding and login limits left as they are');
  // Group exchange stays for net-ssh (Kamal); its primes must be strong enough.
  const moduli = sshPolicy && snap.moduli ? strongModuli(snap.moduli.content) : null;
  if (sshPolicy && !snap.moduli) detailParts.push(`${snap.paths.moduli} not found: sshd uses its built-in groups for group exchange`);
  else if (sshPolicy && !moduli) detailParts.push(`${snap.paths.moduli} has no prime of ${MIN_MODULUS_BITS} bits or more; left as it is`);
  if (moduli && snap.moduli && moduli.dropped > 0) {
    sshdActions.push({ kind: 'write', path: snap.paths.moduli, content: moduli.content, mode: snap.moduli.stat.mode, owner: 'keep' });
    detailParts.push(`rewrite ${snap.paths.moduli}: ${moduli.dropped} prime(s) under ${MIN_MODULUS_BITS} bits removed, ${moduli.kept} kept`);
  }
  steps.push({
    step: 'sshd_config',
    changed: sshdActions.length > 0,
    before: sshd.before,
    after: sshd.after,
    detail: detailParts.join('; '),
    actions: sshdActions,
  });

  const lockout = lockoutReason({
    user: HARDEN_USER,
    home: HARDEN_HOME,
    groups: [...new Set([...(kamal ? kamalGroups : [HARDEN_USER]), HARDEN_GROUP])],
    shellUsable: snap.shellUsable,
    keysAfter: merge.total,
    effective: snap.effectiveKamal,
  });

  return {
    steps,
    lockout,
    problems,
    placement: sshd.placement,
    changed: steps.some((s) => s.changed),
  };
}
