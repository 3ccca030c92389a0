/**
 * Following agent rollouts (POST /api/agents/updates) from tests: long-polls the
 * rollout until it ends or reaches a wanted shape, woken by the server on each change.
 *
 *   const done = await rolloutEnd(cp, id);
 *   await rolloutWhere(cp, id, (r) => r.agents[0]?.command_id !== null);
 */
import type { ApiResponse } from './control-plane.ts';

export interface RolloutAgent {
  instance_id: string;
  instance_name: string | null;
  agent_id: string;
  batch: number;
  platform: string;
  state: string;
  from_version: string | null;
  to_version: string | null;
  command_id: string | null;
  error_key: string | null;
  error_message: string | null;
  started_at: string | null;
  finished_at: string | null;
}

export interface Rollout {
  id: string;
  status: string;
  version: string;
  batch_size: number;
  max_failures: number;
  counts: Record<string, number>;
  error_key: string | null;
  error_message: string | null;
  updated_at: string;
  finished_at: string | null;
  agents: RolloutAgent[];
}

type Api = <T = unknown>(method: string, path: string, opts?: { body?: unknown; key?: string | null }) => Promise<ApiResponse<T>>;

/** Long-polls until `want` holds (or the rollout ended without it: then it throws, with the rollout). */
export async function rolloutWhere(cp: { api: Api }, id: string, want: (r: Rollout) => boolean, timeoutMs = 600_000): Promise<Rollout> {
  const deadline = Date.now() + timeoutMs;
  let after = '';
  for (;;) {
    const q = after ? `?wait_ms=20000&after=${encodeURIComponent(after)}` : '';
    // A keep-alive socket to a previous process fails once after a restart: ask again.
    const res = await cp.api<Rollout>('GET', `/api/agents/updates/${id}${q}`).catch(() => undefined);
    if (res && res.status !== 200) throw new Error(`GET rollout ${id} answered ${res.status}: ${JSON.stringify(res.body)}`);
    const r = res?.body;
    if (r && want(r)) return r;
    if (r && r.status !== 'running') throw new Error(`rollout ${id} ended (${r.status}) without the wanted state: ${JSON.stringify(r, null, 2)}`);
    if (Date.now() > deadline) throw new Error(`rollout ${id} did not reach the wanted state in ${timeoutMs} ms: ${JSON.stringify(r, null, 2)}`);
    if (r) after = r.updated_at;
  }
}

/** The rollout once it is no longer running. */
export function rolloutEnd(cp: { api: Api }, id: string, timeoutMs?: number): Promise<Rollout> {
  return rolloutWhere(cp, id, (r) => r.status !== 'running', timeoutMs);
}
