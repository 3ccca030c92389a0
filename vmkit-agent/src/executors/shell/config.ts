import { z } from 'zod';

/**
 * The ops shell's part of the agent config (`shell` in agent.json). Defaults follow
 * AWS Session Manager where it has one (20 min idle timeout).
 */
export const shellConfigSchema = z.strictObject({
  /** false: every shell.open is refused with shell_disabled. */
  enabled: z.boolean().optional(),
  /** Sessions at once; more are refused with too_many_sessions. */
  max_sessions: z.number().int().min(1).max(1000).optional(),
  /** No bytes either way for this long ends a session. */
  idle_timeout_ms: z.number().int().min(100).max(7 * 24 * 3_600_000).optional(),
  /** A session ends this long after it started, busy or not. */
  max_session_ms: z.number().int().min(100).max(7 * 24 * 3_600_000).optional(),
  /** The account a shell.open without `user` runs as. */
  default_user: z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/).optional(),
  /** Whether shell.open may run as root (uid 0). */
  allow_root: z.boolean().optional(),
  /**
   * Run sessions under this shell (an absolute path, e.g. /bin/sh) instead of the
   * account's login shell: for VMs whose login dotfiles an operator session must not run.
   */
  program: z.string().regex(/^\/[A-Za-z0-9._/-]{1,255}$/).optional(),
});
export type ShellConfig = z.infer<typeof shellConfigSchema>;

export interface ShellLimits {
  enabled: boolean;
  maxSessions: number;
  idleTimeoutMs: number;
  maxSessionMs: number;
  defaultUser: string;
  allowRoot: boolean;
  /** Null: the account's own login shell. */
  program: string | null;
}

export const DEFAULT_SHELL_LIMITS: ShellLimits = {
  enabled: true,
  maxSessions: 10,
  idleTimeoutMs: 20 * 60_000,
  // A working day; past it an operator opens a new (newly authorized) session.
  maxSessionMs: 12 * 3_600_000,
  // The account harden creates; root stays refused unless the VM's owner allows it.
  defaultUser: 'kamal',
  allowRoot: false,
  program: null,
};

export function shellLimits(cfg: ShellConfig | undefined): ShellLimits {
  const d = DEFAULT_SHELL_LIMITS;
  return {
    enabled: cfg?.enabled ?? d.enabled,
    maxSessions: cfg?.max_sessions ?? d.maxSessions,
    idleTimeoutMs: cfg?.idle_timeout_ms ?? d.idleTimeoutMs,
    maxSessionMs: cfg?.max_session_ms ?? d.maxSessionMs,
    defaultUser: cfg?.default_user ?? d.defaultUser,
    allowRoot: cfg?.allow_root ?? d.allowRoot,
    program: cfg?.program ?? d.program,
  };
}
