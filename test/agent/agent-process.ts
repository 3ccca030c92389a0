import { execFile, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { FakeHub } from '../helpers/fake-hub.ts';

/**
 * Real agent processes for the tests: the agent bundled as its executable carries it
 * (scripts/agent-build/build.ts, bundleAgent), built once a run by tap's `before`
 * (test/build-first.ts) and run by plain node. A start costs a third of the CPU the CLI's
 * sources under tsx cost (0.31 s against 0.85-0.93 s for `--help`, 2-vCPU AMD EPYC), and a
 * run starts about 375 agents.
 */

export const ROOT = join(import.meta.dirname, '..', '..');
export const BIN = join(ROOT, 'vmkit-agent', 'bin', 'vmkit-agent.js');
/** Where test/build-first.ts puts the bundle, with node-pty's addon beside it. */
export const AGENT_BUNDLE_DIR = join(ROOT, 'node_modules', '.cache', 'vmkit-agent-test');
export const AGENT_BUNDLE = join(AGENT_BUNDLE_DIR, 'agent.cjs');

function agentArgv(args: string[]): string[] {
  if (!existsSync(AGENT_BUNDLE)) throw new Error(`${AGENT_BUNDLE} is missing: run the tests through tap, whose \`before\` (test/build-first.ts) builds it`);
  return [AGENT_BUNDLE, ...args];
}

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], timeoutMs = 120_000): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, agentArgv(args), { cwd: ROOT, timeout: timeoutMs }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

export class AgentProcess {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;

  constructor(args: string[]) {
    this.child = spawn(process.execPath, agentArgv(args), { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout?.on('data', (d: Buffer) => (this.stdout += d.toString('utf8')));
    this.child.stderr?.on('data', (d: Buffer) => (this.stderr += d.toString('utf8')));
    this.exited = new Promise((resolve) => this.child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Log lines matching `re` (the agent logs `level message {json}` lines on stderr). */
  lines(re: RegExp): string[] {
    return this.stderr.split('\n').filter((l) => re.test(l));
  }

  async waitForLog(re: RegExp, timeoutMs = 120_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines(re)[0];
      if (hit !== undefined) return hit;
      if (!this.alive) throw new Error(`agent exited while waiting for ${re}; stderr:\n${this.stderr}`);
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${re}; stderr:\n${this.stderr}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async stop(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    if (this.alive) {
      this.child.kill('SIGTERM');
      const timer = setTimeout(() => this.child.kill('SIGKILL'), 5000);
      const r = await this.exited;
      clearTimeout(timer);
      return r;
    }
    return this.exited;
  }
}

export interface EnrolledAgent {
  dir: string;
  configFile: string;
  stateDir: string;
  agentId: string;
  config(): Record<string, unknown>;
  patchConfig(patch: Record<string, unknown>): void;
  start(extra?: string[]): AgentProcess;
}

/** Fast reconnects for tests; production defaults are 500 ms base, 60 s cap. */
export const TEST_RECONNECT = { base_ms: 50, cap_ms: 400, stable_ms: 1000, handshake_timeout_ms: 15_000 };

interface Teardown {
  teardown(fn: () => unknown): void;
}

/** Enrolls a fresh agent against `hub` in a temp dir and registers cleanup on `t`. */
export async function enrolledAgent(t: Teardown, hub: FakeHub, reconnect: Record<string, number> = TEST_RECONNECT): Promise<EnrolledAgent> {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-agent-'));
  const procs: AgentProcess[] = [];
  t.teardown(async () => {
    for (const p of procs) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const token = `vmkenr_${Math.random().toString(36).slice(2)}`;
  hub.tokens.add(token);
  const configFile = join(dir, 'etc', 'agent.json');
  const stateDir = join(dir, 'state');
  const r = await runCli(['enroll', '--url', hub.baseUrl, '--token', token, '--config', configFile, '--state-dir', stateDir]);
  if (r.code !== 0) throw new Error(`enroll failed (${r.code}): ${r.stderr}`);
  const read = () => JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  const agent: EnrolledAgent = {
    dir,
    configFile,
    stateDir,
    agentId: String(read().agent_id),
    config: read,
    patchConfig(patch) {
      writeFileSync(configFile, JSON.stringify({ ...read(), ...patch }, null, 2), { mode: 0o600 });
    },
    start(extra = []) {
      const p = new AgentProcess(['run', '--config', configFile, ...extra]);
      procs.push(p);
      return p;
    },
  };
  agent.patchConfig({ reconnect });
  return agent;
}
