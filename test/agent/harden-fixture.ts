/**
 * Test support for the harden executor: fixture trees copied to temp dirs with their
 * Include paths rewritten, a mount namespace where sshd finds its privilege-separation
 * directory without touching the host's /run, and byte-exact tree snapshots.
 */
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { chmod, chown, cp, lstat, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execTool } from '../../vmkit-agent/src/executors/harden/exec.ts';
import type { ExecFn } from '../../vmkit-agent/src/executors/harden/exec.ts';
import { defaultPaths } from '../../vmkit-agent/src/executors/harden/types.ts';
import type { HardenPaths } from '../../vmkit-agent/src/executors/harden/types.ts';

export const FIXTURES = fileURLToPath(new URL('../fixtures/sshd/', import.meta.url));
export const SSHD = '/usr/sbin/sshd';
export const KAMAL_UID = 4242;
export const DOCKER_GID = 4243;

export const FIXTURE_NAMES = [
  'debian-11',
  'debian-11-cloud-init',
  'debian-12',
  'debian-12-cloud-init',
  'ubuntu-20.04',
  'ubuntu-20.04-cloud-init',
  'ubuntu-22.04',
  'ubuntu-22.04-cloud-init',
  'ubuntu-24.04',
  'ubuntu-24.04-cloud-init',
  'no-include',
  'match-passwords',
  'match-all',
  'prohibit-password',
  'crlf-odd-case',
] as const;

/** Why the sshd-backed tests cannot run here, or null. */
export async function cannotRunSshd(): Promise<string | null> {
  if (process.getuid?.() !== 0) return 'needs root (sshd -T checks the privilege-separation directory as root)';
  const s = await lstat(SSHD).catch(() => null);
  if (!s) return `${SSHD} is not installed`;
  const r = await execTool('unshare', ['-m', '--propagation', 'private', 'true']);
  if (r.code !== 0) return `cannot create a mount namespace: ${r.stderr.trim()}`;
  return null;
}

export interface SshdNamespace {
  /** Runs a tool inside the namespace (where /run is a private tmpfs with /run/sshd). */
  exec: ExecFn;
  close(): Promise<void>;
}

/** A long-lived mount namespace for sshd calls: the host's /run is never touched. */
export async function sshdNamespace(): Promise<SshdNamespace> {
  const holder = spawn('unshare', ['-m', '--propagation', 'private', 'sleep', '600'], { stdio: 'ignore' });
  const pid = holder.pid;
  if (pid === undefined) throw new Error('unshare did not start');
  // unshare execs sleep in place; wait until the namespace differs from ours.
  const own = await readlinkNs('self');
  for (let i = 0; i < 100 && (await readlinkNs(String(pid))) === own; i++) await new Promise((r) => setTimeout(r, 20));
  const inNs: ExecFn = (file, args, opts) => execTool('nsenter', ['-t', String(pid), '-m', '--', file, ...args], opts);
  for (const [file, args] of [
    ['mount', ['-t', 'tmpfs', '-o', 'mode=0755', 'tmpfs', '/run']],
    ['mkdir', ['-p', '/run/sshd']],
  ] as const) {
    const r = await inNs(file, args);
    if (r.code !== 0) throw new Error(`${file} in namespace failed: ${r.stderr}`);
  }
  return {
    exec: inNs,
    close: async () => {
      holder.kill('SIGKILL');
      await new Promise((r) => holder.once('exit', r));
    },
  };
}

async function readlinkNs(pid: string): Promise<string> {
  const { readlink } = await import('node:fs/promises');
  return readlink(`/proc/${pid}/ns/mnt`).catch(() => '');
}

export async function makeHostKey(dir: string): Promise<string> {
  const key = join(dir, 'ssh_host_ed25519_key');
  const r = await execTool('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'vmkit-test-host', '-f', key]);
  if (r.code !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
  return key;
}

/** A user key pair's public line, for deploy keys. */
export async function makeUserKey(dir: string, name: string): Promise<string> {
  const key = join(dir, name);
  const r = await execTool('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', key]);
  if (r.code !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`);
  return (await readFile(key + '.pub', 'utf8')).trim();
}

export interface FixtureRoot {
  root: string;
  paths: HardenPaths;
  cleanup: () => Promise<void>;
}

async function rewriteIncludes(dir: string, root: string): Promise<void> {
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) await rewriteIncludes(p, root);
    else if (entry.isFile()) {
      const text = await readFile(p, 'latin1');
      const next = text.replace(/^([ \t]*include[ \t=]+)\/etc\/ssh\//gim, `$1${root}/etc/ssh/`);
      if (next !== text) await writeFile(p, next, 'latin1');
    }
  }
}

/**
 * Copies a fixture to a temp root with what the planner reads besides sshd: passwd
 * and group with kamal and docker (so no account change is needed), kamal's home, and
 * an executable /bin/bash stand-in.
 */
export async function fixtureRoot(name: string, opts: { kamal?: boolean } = {}): Promise<FixtureRoot> {
  const root = await mkdtemp(join(tmpdir(), `vmkit-harden-${name}-`));
  await cp(join(FIXTURES, name), root, { recursive: true });
  await rm(join(root, 'etc/ssh/sshd_config.d/.gitkeep'), { force: true });
  await rewriteIncludes(join(root, 'etc/ssh'), root);
  const withKamal = opts.kamal ?? true;
  await writeFile(
    join(root, 'etc/passwd'),
    `root:x:0:0:root:/root:/bin/bash\n` + (withKamal ? `kamal:x:${KAMAL_UID}:${KAMAL_UID}::/home/kamal:/bin/bash\n` : ''),
  );
  await writeFile(
    join(root, 'etc/group'),
    `root:x:0:\n` + (withKamal ? `kamal:x:${KAMAL_UID}:\n` : '') + `docker:x:${DOCKER_GID}:${withKamal ? 'kamal' : ''}\n`,
  );
  await writeFile(join(root, 'etc/shadow'), `root:*:19000:0:99999:7:::\n` + (withKamal ? `kamal:!:19000:0:99999:7:::\n` : ''), { mode: 0o640 });
  await mkdir(join(root, 'bin'), { recursive: true });
  await writeFile(join(root, 'bin/bash'), '#!/bin/sh\n', { mode: 0o755 });
  // As on a VM whose sshd runs: the ssh unit creates its privilege-separation directory.
  await mkdir(join(root, 'run/sshd'), { recursive: true, mode: 0o755 });
  if (withKamal) {
    await mkdir(join(root, 'home/kamal'), { recursive: true });
    await chown(join(root, 'home/kamal'), KAMAL_UID, KAMAL_UID);
    await chmod(join(root, 'home/kamal'), 0o750);
  }
  return { root, paths: defaultPaths(root), cleanup: () => rm(root, { recursive: true, force: true }) };
}

export interface Entry {
  kind: 'file' | 'dir' | 'other';
  mode: number;
  uid: number;
  gid: number;
  mtimeMs: number;
  sha256?: string;
}

/** Every path under a root with its bytes (hashed), mode, owner and mtime. */
export async function treeState(root: string): Promise<Map<string, Entry>> {
  const out = new Map<string, Entry>();
  const walk = async (dir: string): Promise<void> => {
    for (const name of (await readdir(dir)).sort()) {
      const p = join(dir, name);
      const s = await lstat(p);
      const base = { mode: s.mode & 0o7777, uid: s.uid, gid: s.gid, mtimeMs: s.mtimeMs };
      if (s.isDirectory()) {
        out.set(p, { ...base, kind: 'dir' });
        await walk(p);
      } else if (s.isFile()) {
        out.set(p, { ...base, kind: 'file', sha256: createHash('sha256').update(await readFile(p)).digest('hex') });
      } else out.set(p, { ...base, kind: 'other' });
    }
  };
  await walk(root);
  return out;
}

/** The same state without mtimes (a restored file is a new write with the old bytes). */
export function withoutTimes(state: Map<string, Entry>): Record<string, Omit<Entry, 'mtimeMs'>> {
  const out: Record<string, Omit<Entry, 'mtimeMs'>> = {};
  for (const [p, e] of state) {
    const { mtimeMs: _m, ...rest } = e;
    // A directory's mtime and the parent of a created-then-removed file change; their
    // contents are compared entry by entry, so only the files' and dirs' metadata count.
    out[p] = rest;
  }
  return out;
}

/** A host key, a deploy key and an sshd namespace for one test file, all removed at its end. */
export async function sshdRig(t: { teardown(fn: () => Promise<void>): void }, prefix: string): Promise<{ keysDir: string; hostKey: string; deployKey: string; ns: SshdNamespace }> {
  const keysDir = await mkdtemp(join(tmpdir(), prefix));
  const hostKey = await makeHostKey(keysDir);
  const deployKey = await makeUserKey(keysDir, 'deploy');
  const ns = await sshdNamespace();
  t.teardown(async () => {
    await ns.close();
    await rm(keysDir, { recursive: true, force: true });
  });
  return { keysDir, hostKey, deployKey, ns };
}
