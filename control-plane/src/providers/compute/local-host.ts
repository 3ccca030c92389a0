/** What the local sandbox needs from the host, and how it tells its own processes apart. */
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';

const REQUIRED_TOOLS = ['ip', 'unshare', 'nsenter', 'mount', 'umount', 'hostname', 'ssh-keygen', 'chpasswd'];

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function onPath(tool: string): boolean {
  for (const dir of [...(process.env.PATH ?? '').split(delimiter), '/usr/sbin', '/sbin', '/usr/bin', '/bin']) {
    if (dir === '') continue;
    try {
      accessSync(join(dir, tool), constants.X_OK);
      return true;
    } catch {
      // not in this directory
    }
  }
  return false;
}

/** Why sandboxes cannot run on this machine, or undefined when they can. */
export function sandboxUnavailableReason(): string | undefined {
  if (process.platform !== 'linux') return `it needs Linux (this is ${process.platform})`;
  if (process.getuid?.() !== 0) return 'it needs root (namespaces, veth links and overlay mounts)';
  const missing = REQUIRED_TOOLS.filter((t) => !onPath(t));
  if (!existsSync('/usr/sbin/sshd')) missing.push('/usr/sbin/sshd (openssh-server)');
  if (missing.length > 0) return `missing tools: ${missing.join(', ')}`;
  let fs = '';
  try {
    fs = readFileSync('/proc/filesystems', 'utf8');
  } catch {
    return 'cannot read /proc/filesystems';
  }
  if (!/\boverlay\b/.test(fs)) return 'the kernel has no overlay filesystem';
  return undefined;
}

/** Start time of a process (field 22 of /proc/PID/stat), to tell it from a reused pid. */
export function processStart(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

export function alive(pid: number | undefined, start: string | undefined): pid is number {
  if (pid === undefined) return false;
  const now = processStart(pid);
  if (now === undefined) return false;
  // A zombie has released its namespaces already: it is not the sandbox any more.
  try {
    if (/^State:\s+Z/m.test(readFileSync(`/proc/${pid}/status`, 'utf8'))) return false;
  } catch {
    return false;
  }
  return start === undefined || now === start;
}

/** A pid from the state file, only when it is still the very process recorded (never a reused pid). */
export function recorded(pid: number | undefined, start: string | undefined): pid is number {
  return start !== undefined && alive(pid, start);
}

export function firstChild(pid: number): number | undefined {
  try {
    const first = readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/)[0];
    return first ? Number(first) : undefined;
  } catch {
    return undefined;
  }
}
