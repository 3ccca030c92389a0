import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { AGENT_PLATFORMS, agentPlatformSchema, agentVersionSchema, compareAgentVersions } from '@vmkit/protocol';
import type { AgentPlatform, AgentReleaseBody } from '@vmkit/protocol';
import type { Config } from '../config.ts';

/** The repository root (control-plane/src/hub → ../../..). */
const REPO_ROOT = join(import.meta.dirname, '..', '..', '..');
/** Served at GET /install.sh. */
export const INSTALL_SCRIPT = join(REPO_ROOT, 'scripts', 'install-agent.sh');
/** The executable's name inside a release folder and at the end of its URL. */
export const ARTIFACT_NAME = 'vmkit-agent';

declare module '../config.ts' {
  interface Config {
    /** Where agent releases are served from; default `<dataDir>/agent-releases` (env VMKIT_AGENT_RELEASES_DIR). */
    agentReleasesDir?: string;
  }
}

/** `config.agentReleasesDir`, else VMKIT_AGENT_RELEASES_DIR, else `<dataDir>/agent-releases`. */
export function agentReleasesDir(config: Config, env: NodeJS.ProcessEnv = process.env): string {
  return config.agentReleasesDir ?? (env.VMKIT_AGENT_RELEASES_DIR || join(config.dataDir, 'agent-releases'));
}

/** A release on disk, with the sha-256 of its bytes as they are now. */
export interface AgentRelease extends AgentReleaseBody {
  file: string;
}

/** The release's files disagree with its build manifest (a half copy, a swapped binary). */
export class ReleaseCorruptError extends Error {
  override readonly name = 'ReleaseCorruptError';
}

interface Hashed {
  key: string;
  sha256: Promise<string>;
}

function hashFile(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (chunk) => h.update(chunk))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

/**
 * Agent releases in the layout `npm run build:agent` writes:
 *
 *   <dir>/<version>/<platform>/vmkit-agent      the executable
 *   <dir>/<version>/<platform>/manifest.json    the build's {version, platform, sha256, size, ...}
 *
 * The sha-256 served is computed here from the file (cached while its inode, size and
 * mtime stay the same), never taken from manifest.json; when manifest.json exists it
 * must agree, so a half-copied or swapped binary is refused instead of served.
 */
export class AgentReleaseStore {
  readonly dir: string;
  readonly #hashes = new Map<string, Hashed>();

  constructor(dir: string) {
    this.dir = dir;
  }

  /** Versions present for the platform, highest first. */
  async versions(platform: AgentPlatform): Promise<string[]> {
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      return [];
    }
    const present: string[] = [];
    for (const v of names) {
      if (!agentVersionSchema.safeParse(v).success) continue;
      const st = await stat(join(this.dir, v, platform, ARTIFACT_NAME)).catch(() => undefined);
      if (st?.isFile()) present.push(v);
    }
    return present.sort((a, b) => compareAgentVersions(b, a));
  }

  /** Every platform's versions (for listings). */
  async all(): Promise<{ platform: AgentPlatform; versions: string[] }[]> {
    return Promise.all(AGENT_PLATFORMS.map(async (platform) => ({ platform, versions: await this.versions(platform) })));
  }

  /** The release, or undefined when it is not here; ReleaseCorruptError when its files disagree. */
  async get(version: string, platform: string): Promise<AgentRelease | undefined> {
    if (!agentVersionSchema.safeParse(version).success || !agentPlatformSchema.safeParse(platform).success) return undefined;
    const p = platform as AgentPlatform;
    const file = join(this.dir, version, p, ARTIFACT_NAME);
    const st = await stat(file).catch(() => undefined);
    if (!st?.isFile()) return undefined;
    const key = `${st.ino}:${st.size}:${st.mtimeMs}`;
    let cached = this.#hashes.get(file);
    if (cached?.key !== key) {
      cached = { key, sha256: hashFile(file) };
      this.#hashes.set(file, cached);
      cached.sha256.catch(() => this.#hashes.delete(file));
    }
    const sha256 = await cached.sha256;
    const built = await this.#buildManifest(join(this.dir, version, p, 'manifest.json'));
    if (built !== undefined) {
      const mismatch = (['version', 'platform', 'sha256', 'size'] as const).filter((k) => built[k] !== { version, platform: p, sha256, size: st.size }[k]);
      if (mismatch.length > 0) throw new ReleaseCorruptError(`${file} does not match its manifest.json (${mismatch.join(', ')})`);
    }
    return { version, platform: p, sha256, size: st.size, file };
  }

  async latest(platform: AgentPlatform): Promise<AgentRelease | undefined> {
    const [newest] = await this.versions(platform);
    return newest === undefined ? undefined : this.get(newest, platform);
  }

  async #buildManifest(file: string): Promise<Record<string, unknown> | undefined> {
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch {
      return undefined;
    }
    try {
      const value = JSON.parse(text) as unknown;
      if (typeof value === 'object' && value !== null && !Array.isArray(value)) return value as Record<string, unknown>;
    } catch {
      // reported below
    }
    throw new ReleaseCorruptError(`${file} is not a JSON object`);
  }
}
