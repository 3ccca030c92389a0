/**
 * An agent installed on this machine the way a VM gets it: install-agent.sh downloads a
 * release from a real control plane, verifies it, lays out <prefix>/versions/<v> with
 * `current`, enrolls it, and (no systemd here) runs it under the script's restart loop,
 * which stands in for systemd's Restart=always. Each install lives in its own temp dir;
 * the loop's process group is ended at teardown. Needs root and no systemd (see
 * `installedAgentSkipReason`), and the release served by the control plane
 * (test/helpers/agent-artifact.ts).
 *
 *   const a = await installAgent(t, cp, { version: '0.1.0', agentConfig: { update: { confirm_within_ms: 8_000 } } });
 *   a.current();            // 'versions/0.1.0'
 *   a.log();                // the agent's log so far
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readlinkSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ROOT } from '../agent/agent-process.ts';
import type { AgentControlPlane } from './real-agent.ts';
import { waitAgentState } from './real-agent.ts';
import { uniqueInstanceName } from './control-plane.ts';
import { stopInstalledAgent } from './agent-artifact.ts';

export const installedAgentSkipReason: string | false =
  process.getuid?.() !== 0 ? 'needs root (install-agent.sh refuses to run otherwise)' : existsSync('/run/systemd/system') ? 'this machine runs systemd; the install script would install a real unit' : false;

export interface InstalledAgent {
  instanceId: string;
  name: string;
  prefix: string;
  stateDir: string;
  /** Where `current` points, e.g. `versions/0.1.1`. */
  current(): string;
  /** Versions present under <prefix>/versions. */
  versions(): string[];
  log(): string;
  /** Whether the pending-update marker is there. */
  updatePending(): boolean;
}

export interface InstallOptions {
  version: string;
  name?: string;
  /** Merged into the agent's config; the agent is restarted (by the loop) to read it. */
  agentConfig?: Record<string, unknown>;
}

/** Installs, enrolls and starts one agent; resolves once it is connected with the wanted config. */
export async function installAgent(t: { teardown(fn: () => unknown): void }, cp: AgentControlPlane, opts: InstallOptions): Promise<InstalledAgent> {
  const name = opts.name ?? uniqueInstanceName('installed');
  const inst = (await cp.api<{ id: string }>('POST', '/api/instances', { body: { name } })).body;
  const tok = (await cp.api<{ token: string; install_command: string }>('POST', `/api/instances/${inst.id}/enrollment-token`)).body;
  const cpKey = /VMKIT_CP_KEY=(\S+)/.exec(tok.install_command)?.[1] ?? '';
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-installed-'));
  const prefix = join(dir, 'opt');
  const config = join(dir, 'agent.json');
  const stateDir = join(dir, 'state');
  const pidFile = join(dir, 'loop.pid');
  const logFile = join(dir, 'agent.log');
  t.teardown(async () => {
    await stopInstalledAgent(pidFile);
    rmSync(dir, { recursive: true, force: true });
  });
  const env = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    VMKIT_AGENT_PREFIX: prefix,
    VMKIT_AGENT_CONFIG: config,
    VMKIT_AGENT_STATE_DIR: stateDir,
    VMKIT_AGENT_LOG: logFile,
    VMKIT_AGENT_PIDFILE: pidFile,
    VMKIT_INSTALL_SKIP_APT: '1',
    VMKIT_CP_KEY: cpKey,
    VMKIT_AGENT_VERSION: opts.version,
  };
  const installed = await new Promise<{ code: number; out: string }>((resolve) => {
    execFile('bash', [join(ROOT, 'scripts', 'install-agent.sh'), cp.url, tok.token], { env, timeout: 300_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number(err.code ?? -1) : 0, out: stdout + stderr }),
    );
  });
  if (installed.code !== 0) throw new Error(`install-agent.sh exited ${installed.code}:\n${installed.out}`);
  const log = () => (existsSync(logFile) ? readFileSync(logFile, 'utf8') : '');
  if (opts.agentConfig) {
    const cfg = JSON.parse(readFileSync(config, 'utf8')) as Record<string, unknown>;
    writeFileSync(config, JSON.stringify({ ...cfg, ...opts.agentConfig }), { mode: 0o600 });
    // The agent reads its config at start: end this one, the loop starts it again.
    await waitAgentState(cp, inst.id, 'connected', 120_000);
    const pid = (JSON.parse(readFileSync(join(stateDir, 'status.json'), 'utf8')) as { pid: number }).pid;
    process.kill(pid, 'SIGTERM');
    await waitAgentState(cp, inst.id, 'disconnected', 120_000);
  }
  await waitAgentState(cp, inst.id, 'connected', 120_000).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}; agent log:\n${log().slice(-3000)}`);
  });
  return {
    instanceId: inst.id,
    name,
    prefix,
    stateDir,
    current: () => readlinkSync(join(prefix, 'current')),
    versions: () => readdirSync(join(prefix, 'versions')).sort(),
    log,
    updatePending: () => existsSync(join(stateDir, 'update.json')),
  };
}
