import type { HardenResult, HardenStepReport } from '@vmkit/protocol';
import type { ConfigTree } from './sshd-config.ts';

export const HARDEN_USER = 'kamal';
export const HARDEN_GROUP = 'docker';
export const HARDEN_HOME = '/home/kamal';
export const HARDEN_SHELL = '/bin/bash';

/** Where things are. Every path is a real path on this machine (already joined with the root). */
export interface HardenPaths {
  root: string;
  passwd: string;
  group: string;
  shadow: string;
  sshDir: string;
  sshdConfig: string;
  /** Group-exchange primes; the SSH policy keeps only the strong ones. */
  moduli: string;
  dockerSocket: string;
  dockerd: readonly string[];
  /** sshd's privilege-separation directory; `sshd -t` refuses to run without it. */
  privsepDir: string;
  systemdRunDir: string;
  /** PID 1's name: systemd is used only when it really is PID 1 (not a sandbox that sees the host's /run). */
  initComm: string;
  /** /proc, to check a pid from a pid file really is sshd before signalling it. */
  proc: string;
  sshdPidFile: string;
}

/** Maps a path as the system names it (`/etc/passwd`) to where it is under `root`. */
export function underRoot(root: string, path: string): string {
  if (root === '/' || root === '') return path;
  return root.replace(/\/+$/, '') + path;
}

export function defaultPaths(root = '/'): HardenPaths {
  const r = (p: string) => underRoot(root, p);
  return {
    root,
    passwd: r('/etc/passwd'),
    group: r('/etc/group'),
    shadow: r('/etc/shadow'),
    sshDir: r('/etc/ssh'),
    sshdConfig: r('/etc/ssh/sshd_config'),
    moduli: r('/etc/ssh/moduli'),
    dockerSocket: r('/run/docker.sock'),
    dockerd: [r('/usr/bin/dockerd'), r('/usr/sbin/dockerd'), r('/usr/local/bin/dockerd')],
    privsepDir: r('/run/sshd'),
    systemdRunDir: r('/run/systemd/system'),
    initComm: r('/proc/1/comm'),
    proc: r('/proc'),
    sshdPidFile: r('/run/sshd.pid'),
  };
}

export interface FileStat {
  mode: number; // permission bits only
  uid: number;
  gid: number;
  kind: 'file' | 'dir' | 'socket' | 'symlink' | 'other';
}

/** `sshd -T` output: keyword → every value line (AllowUsers etc. can repeat). */
export type EffectiveConfig = ReadonlyMap<string, readonly string[]>;

/** Everything the planner looks at, read once; the planner itself does no I/O. */
export interface SystemSnapshot {
  paths: HardenPaths;
  passwd: string | null;
  group: string | null;
  shadow: string | null;
  sshd: ConfigTree;
  /** Stats of every file in the sshd tree, keyed by path. */
  sshdStats: ReadonlyMap<string, FileStat>;
  /** The Include directories' stats, for the drop-in's parent. */
  kamal: {
    /** Real path of ~kamal/.ssh (under root), for the home the plan will give kamal. */
    sshDir: string;
    sshDirStat: FileStat | null;
    authorizedKeysPath: string;
    authorizedKeysStat: FileStat | null;
    authorizedKeys: string | null;
    homeStat: FileStat | null;
  };
  docker: { socketStat: FileStat | null; daemonInstalled: boolean };
  /** Whether /bin/bash (under root) exists and is executable. */
  shellUsable: boolean;
  /** `sshd -T` on the current configuration for user=kamal, when it could be read. */
  effectiveKamal: EffectiveConfig | null;
  /** /etc/ssh/moduli, when it was read (absent: no such file or not looked at). */
  moduli?: { content: string; stat: FileStat } | null;
}

export interface Owner {
  /** Resolved from /etc/passwd and /etc/group at run time, since kamal may not exist yet. */
  user: string;
  group: string;
}

export type Action =
  | { kind: 'exec'; file: string; args: string[] }
  | { kind: 'mkdir'; path: string; mode: number; owner: Owner }
  | { kind: 'write'; path: string; content: string; mode: number; owner: Owner | 'keep' }
  | { kind: 'chown'; path: string; owner: Owner }
  | { kind: 'chmod'; path: string; mode: number };

export type StepName = 'group_docker' | 'user_kamal' | 'docker_socket' | 'ssh_dir' | 'authorized_keys' | 'sshd_config';

export interface PlannedStep {
  step: StepName;
  changed: boolean;
  before?: string;
  after?: string;
  detail?: string;
  actions: Action[];
}

export interface HardenPlan {
  steps: PlannedStep[];
  /** Why hardening would lock everyone out, or null. */
  lockout: string | null;
  /** Refusals that are not lockouts (symlinked key files, unreadable config). */
  problems: string[];
  /** How the winning settings are placed. */
  placement: 'drop-in' | 'managed-block' | 'none';
  changed: boolean;
}

/** What a step looks like in the result: short, serialisable (shared-protocol's schema). */
export type StepReport = HardenStepReport;

/** The harden command's result output (shared-protocol's hardenResultSchema, which the control plane parses). */
export type HardenOutput = HardenResult;
