import type { Forward } from './local-relay.ts';

/**
 * What the host hands the sandbox's supervisor at boot (boot.json, 0600, deleted by
 * the supervisor once read) — the sandbox's equivalent of cloud-init user-data.
 */

/** One program run inside the sandbox, as root, with an argument array. */
export interface GuestStep {
  argv: string[];
  env?: Record<string, string>;
  /** Working directory inside the sandbox; default `/root`. */
  cwd?: string;
}

/**
 * Programs started after sshd answers, one after the other (a failing step stops the
 * rest); their stdout/stderr go to `program.log` in the sandbox folder. With
 * `restart_last`, the last step is restarted when it exits (as systemd would).
 */
export interface GuestProgram {
  steps: GuestStep[];
  restart_last?: boolean;
  /**
   * A fixed pause before each restart, like systemd's RestartSec; absent: 1 s doubling
   * up to 10 s. Tests that kill the agent on purpose use a short one.
   */
  restart_delay_ms?: number;
}

export interface BootConfig {
  version: 1;
  hostname: string;
  /** Directories overlaid with a private upper layer in the sandbox folder. */
  overlays: string[];
  root_password: string;
  /** TCP relays inside the sandbox, started before the program (loopback control plane). */
  forwards?: Forward[];
  program?: GuestProgram;
}

export const BOOT_FILE = 'boot.json';
export const STATE_FILE = 'state.json';
export const SUPERVISOR_LOG = 'supervisor.log';
export const SSHD_LOG = 'sshd.log';
export const PROGRAM_LOG = 'program.log';
export const RELAY_LOG = 'relay.log';
/** Printed by the supervisor once sshd listens. */
export const READY_LINE = 'vmkit-sandbox: ready';

/** Overlay folder name for a target directory: `/etc` → `etc`. */
export function overlayName(target: string): string {
  return target.replace(/^\/+/, '').replace(/\//g, '_');
}

export function isBootConfig(v: unknown): v is BootConfig {
  if (typeof v !== 'object' || v === null) return false;
  const b = v as Record<string, unknown>;
  return (
    b.version === 1 &&
    typeof b.hostname === 'string' &&
    typeof b.root_password === 'string' &&
    Array.isArray(b.overlays) &&
    b.overlays.every((o) => typeof o === 'string' && o.startsWith('/'))
  );
}
