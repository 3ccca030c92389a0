/**
 * A real vmkit-agent process enrolled with a real test control plane (the CLI's own
 * `enroll`, then `run`), in a temp dir removed at teardown.
 *
 *   const agent = await enrollRealAgent(t, cp);
 *   const proc = agent.start();
 *   await waitAgentState(cp, agent.instanceId, 'connected');
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AgentProcess, TEST_RECONNECT, runCli } from '../agent/agent-process.ts';
import type { TestControlPlane } from './control-plane.ts';
import { uniqueInstanceName } from './control-plane.ts';

export interface RealAgent {
  instanceId: string;
  agentId: string;
  configFile: string;
  stateDir: string;
  config(): Record<string, unknown>;
  patchConfig(patch: Record<string, unknown>): void;
  start(): AgentProcess;
}

/** What the agent helpers need of a control plane: the in-process one, or an adapter over a process. */
export type AgentControlPlane = Pick<TestControlPlane, 'url' | 'api'>;

export async function enrollRealAgent(
  t: { teardown(fn: () => unknown): void },
  cp: AgentControlPlane,
  opts: { name?: string; reconnect?: Record<string, number>; enrollArgs?: string[] } = {},
): Promise<RealAgent> {
  const inst = (await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: opts.name ?? uniqueInstanceName('real-agent') } })).body;
  const tok = (await cp.api<{ token: string }>('POST', `/api/instances/${inst.id}/enrollment-token`)).body;
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-real-agent-'));
  const procs: AgentProcess[] = [];
  t.teardown(async () => {
    for (const p of procs) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  });
  const configFile = join(dir, 'agent.json');
  const stateDir = join(dir, 'state');
  // Generous: a shared machine is slow.
  const r = await runCli(['enroll', '--url', cp.url, '--token', tok.token, '--config', configFile, '--state-dir', stateDir, ...(opts.enrollArgs ?? [])], 120_000);
  if (r.code !== 0) throw new Error(`enroll failed (${r.code}): ${r.stderr}`);
  const read = () => JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  const agent: RealAgent = {
    instanceId: inst.id,
    agentId: String(read().agent_id),
    configFile,
    stateDir,
    config: read,
    patchConfig(patch) {
      writeFileSync(configFile, JSON.stringify({ ...read(), ...patch }, null, 2), { mode: 0o600 });
    },
    start() {
      const p = new AgentProcess(['run', '--config', configFile, '--state-dir', stateDir]);
      procs.push(p);
      return p;
    },
  };
  agent.patchConfig({ reconnect: opts.reconnect ?? TEST_RECONNECT });
  return agent;
}

/** Waits (polling the API, generous bound) until the instance's agent shows `want`. */
export async function waitAgentState(cp: AgentControlPlane, instanceId: string, want: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    // A keep-alive socket to a previous process fails once after a restart: ask again.
    const got = await cp.api<{ agent: { state: string } | null }>('GET', `/api/instances/${instanceId}`).catch(() => undefined);
    if (got?.body.agent?.state === want) return;
    if (Date.now() > deadline) throw new Error(`agent of ${instanceId} not ${want} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

let plainBashPath: string | undefined;
/**
 * A shell for agents' `shell.program` in tests: bash without /etc/profile or the host
 * root's dotfiles, which are not the tests' to run (a shell killed mid-start can leave
 * them wedged, e.g. a pyenv rehash lock every later login shell then waits on).
 */
export function plainBashShell(): string {
  if (plainBashPath !== undefined) return plainBashPath;
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-plain-bash-'));
  const file = join(dir, 'bash');
  writeFileSync(file, '#!/bin/sh\nexec /bin/bash --noprofile --norc "$@"\n', { mode: 0o755 });
  process.on('exit', () => rmSync(dir, { recursive: true, force: true }));
  plainBashPath = file;
  return file;
}

/** The control plane's command bus (a test control plane always runs one). */
export function busOf(cp: TestControlPlane) {
  const bus = cp.ctx.commandBus;
  if (!bus) throw new Error('no command bus');
  return bus;
}

/** Waits until the hub stored a result for `commandId`. */
export async function storedResult(cp: TestControlPlane, commandId: string) {
  const deadline = Date.now() + 60_000;
  for (;;) {
    const c = await busOf(cp).get(commandId);
    if (c?.result) return c;
    if (Date.now() > deadline) throw new Error(`no result stored for ${commandId}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
