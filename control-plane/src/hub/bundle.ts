import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/** The repository root (control-plane/src/hub → ../../..). */
export const REPO_ROOT = join(import.meta.dirname, '..', '..', '..');
export const INSTALL_SCRIPT = join(REPO_ROOT, 'scripts', 'install-agent.sh');

/**
 * The files of the agent bundle, relative to the repository root. Layout of the
 * tarball (everything under `vmkit-agent-bundle/`):
 *
 *   package.json          npm workspaces root: shared-protocol, vmkit-agent
 *   shared-protocol/      @vmkit/protocol sources (package.json, src/)
 *   vmkit-agent/          @vmkit/agent sources (package.json, bin/, src/)
 *   scripts/vmkit-agent.service  the systemd unit install-agent.sh installs
 *
 * Install and run: `cd vmkit-agent-bundle && npm install --omit=dev`, then
 * `node --import tsx vmkit-agent/src/cli.ts <command>` (or vmkit-agent/bin/vmkit-agent.js).
 * There is no build step: sources run under tsx, like everywhere else in VMKit.
 */
// scripts/vmkit-agent.service: install-agent.sh installs the unit from the bundle.
const BUNDLED = ['shared-protocol/package.json', 'shared-protocol/src', 'vmkit-agent/package.json', 'vmkit-agent/src', 'vmkit-agent/bin', 'scripts/vmkit-agent.service'];

const BUNDLE_PACKAGE_JSON = {
  name: 'vmkit-agent-bundle',
  private: true,
  type: 'module',
  description: 'vmkit-agent with @vmkit/protocol, as served by the control plane at /agent/bundle.tar.gz',
  workspaces: ['shared-protocol', 'vmkit-agent'],
};

export interface AgentBundle {
  data: Buffer;
  sha256: string;
}

/** Builds the tarball with the `tar` binary (argument array, no shell). */
export async function buildAgentBundle(root = REPO_ROOT): Promise<AgentBundle> {
  const present = BUNDLED.filter((p) => existsSync(join(root, p)));
  const staging = mkdtempSync(join(tmpdir(), 'vmkit-bundle-'));
  try {
    writeFileSync(join(staging, 'package.json'), `${JSON.stringify(BUNDLE_PACKAGE_JSON, null, 2)}\n`);
    const { stdout } = await execFileAsync(
      'tar',
      [
        '-czf',
        '-',
        '--sort=name',
        '--mtime=@0',
        '--owner=0',
        '--group=0',
        '--numeric-owner',
        '--exclude=node_modules',
        '--exclude=*.test.ts',
        '--transform=s,^,vmkit-agent-bundle/,',
        '-C',
        staging,
        'package.json',
        '-C',
        root,
        ...present,
      ],
      { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 },
    );
    return { data: stdout, sha256: createHash('sha256').update(stdout).digest('hex') };
  } finally {
    rmSync(staging, { recursive: true, force: true });
  }
}

/** Builds once per process, on first use; a failed build is retried on the next call. */
export class AgentBundleCache {
  #pending: Promise<AgentBundle> | undefined;
  constructor(private readonly root = REPO_ROOT) {}

  get(): Promise<AgentBundle> {
    this.#pending ??= buildAgentBundle(this.root).catch((err: unknown) => {
      this.#pending = undefined;
      throw err;
    });
    return this.#pending;
  }
}
