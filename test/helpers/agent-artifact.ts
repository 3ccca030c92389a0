/**
 * Single-executable agent builds for tests, built once per content: the cache key is
 * the hash of everything that goes into the executable (agent and protocol sources,
 * the build script, the unit, pty.node, the Node binary, the lockfile) plus the version
 * and the test fault, so a test run builds each variant at most once and later runs
 * reuse it until a source changes. Two test processes building the same key at once
 * both finish; the first rename wins.
 *
 *   const a = await agentArtifact({ version: '0.1.1' });   // a.file, a.manifest
 *   const dir = releasesDir(t, [a, b]);                     // a releases folder for a control plane
 */
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { REPO_ROOT, buildAgent, cannotBuild, packageVersion } from '../../scripts/agent-build/build.ts';
import type { AgentBuildManifest, BuildFault } from '../../scripts/agent-build/build.ts';
import { platformOf } from '@vmkit/protocol';

const CACHE = join(REPO_ROOT, 'node_modules', '.cache', 'vmkit-agent-sea');
/** Builds kept in the cache (about 110 MB each). */
const KEEP = 8;

export interface AgentArtifact {
  file: string;
  manifest: AgentBuildManifest;
}

/** Why the executable cannot be built here (a skip reason), or false. */
export const artifactSkipReason: string | false = (() => {
  const platform = platformOf(process.platform, process.arch);
  if (platform === undefined) return `no agent release for ${process.platform}-${process.arch}`;
  return cannotBuild(platform) ?? false;
})();

function walk(dir: string, out: string[]): void {
  for (const name of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, name.name);
    if (name.isDirectory()) walk(p, out);
    else if (name.isFile()) out.push(p);
  }
}

function inputsHash(version: string, fault: BuildFault | undefined): string {
  const h = createHash('sha256');
  h.update(`${version}\0${fault ?? ''}\0${process.platform}-${process.arch}\0`);
  const files: string[] = [];
  for (const d of ['vmkit-agent/src', 'shared-protocol/src', 'scripts/agent-build']) walk(join(REPO_ROOT, d), files);
  files.push(
    join(REPO_ROOT, 'scripts', 'vmkit-agent.service'),
    join(REPO_ROOT, 'package-lock.json'),
    join(REPO_ROOT, 'node_modules', 'node-pty', 'build', 'Release', 'pty.node'),
  );
  for (const f of files.sort()) h.update(`${relative(REPO_ROOT, f)}\0`).update(readFileSync(f));
  const node = join(REPO_ROOT, 'node_modules', `node-${process.platform}-${process.arch}`, 'bin', 'node');
  const st = statSync(node);
  h.update(`${st.size}:${st.mtimeMs}`);
  return h.digest('hex').slice(0, 24);
}

function prune(): void {
  const entries = readdirSync(CACHE)
    .filter((n) => !n.startsWith('.'))
    .map((n) => ({ n, t: statSync(join(CACHE, n)).mtimeMs }))
    .sort((a, b) => b.t - a.t);
  for (const e of entries.slice(KEEP)) rmSync(join(CACHE, e.n), { recursive: true, force: true });
}

const pending = new Map<string, Promise<AgentArtifact>>();

/** The executable of this version (default: the package's), built or taken from the cache. */
export function agentArtifact(opts: { version?: string; fault?: BuildFault } = {}): Promise<AgentArtifact> {
  const version = opts.version ?? packageVersion();
  const key = inputsHash(version, opts.fault);
  const known = pending.get(key);
  if (known) return known;
  const p = (async () => {
    const platform = platformOf(process.platform, process.arch) ?? 'linux-x64';
    const dir = join(CACHE, key);
    const file = join(dir, version, platform, 'vmkit-agent');
    const manifestFile = join(dir, version, platform, 'manifest.json');
    if (!existsSync(manifestFile)) {
      mkdirSync(CACHE, { recursive: true });
      const tmp = join(CACHE, `.${key}.${process.pid}.${Date.now()}`);
      try {
        await buildAgent({ version, out: tmp, ...(opts.fault ? { fault: opts.fault } : {}), log: () => undefined });
        try {
          renameSync(tmp, dir);
        } catch (err) {
          // Another test process finished the same build first: use its copy.
          if (!existsSync(manifestFile)) throw err;
        }
      } finally {
        rmSync(tmp, { recursive: true, force: true });
      }
      prune();
    }
    return { file, manifest: JSON.parse(readFileSync(manifestFile, 'utf8')) as AgentBuildManifest };
  })();
  pending.set(key, p);
  p.catch(() => pending.delete(key));
  return p;
}

/** A releases folder holding these artifacts (hard links into the cache), removed at teardown. */
export function releasesDir(t: { teardown(fn: () => unknown): void }, artifacts: AgentArtifact[]): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-releases-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  for (const a of artifacts) addRelease(dir, a);
  return dir;
}

export function addRelease(dir: string, a: AgentArtifact): string {
  const target = join(dir, a.manifest.version, a.manifest.platform);
  mkdirSync(target, { recursive: true });
  const file = join(target, 'vmkit-agent');
  try {
    linkSync(a.file, file);
  } catch {
    copyFileSync(a.file, file);
  }
  copyFileSync(join(a.file, '..', 'manifest.json'), join(target, 'manifest.json'));
  return file;
}

/**
 * Stops what an install script started without systemd: its restart loop and the agent
 * under it, one process group named by the pid file; waits (bounded) until the group is gone,
 * then kills what is left.
 */
export async function stopInstalledAgent(pidFile: string): Promise<void> {
  if (!existsSync(pidFile)) return;
  const pid = Number(readFileSync(pidFile, 'utf8'));
  try {
    process.kill(-pid, 'SIGTERM');
  } catch {
    return; // already gone
  }
  for (let i = 0; i < 100; i++) {
    try {
      process.kill(-pid, 0);
    } catch {
      return;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // gone meanwhile
  }
}
