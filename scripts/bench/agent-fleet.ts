/**
 * Fleet update benchmark: N agents installed here the way a VM gets them (install-agent.sh,
 * single executable, the script's restart loop), then POST /api/agents/updates takes them
 * all from 0.1.0 to 0.1.1 in one batch, and back down to 0.1.0 one agent at a time.
 *
 *   node --import tsx scripts/bench/agent-fleet.ts [--agents 4]
 *
 * Each figure is from the POST to the rollout's end as the API reports it (every agent
 * downloaded ~110 MB from the control plane, verified it, switched, restarted and
 * connected on the new version), plus the per-agent update time (started to finished).
 * Needs root and no systemd, like the install tests; says so and skips otherwise.
 */
import { cpus, loadavg, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { agentArtifact, artifactSkipReason, releasesDir } from '../../test/helpers/agent-artifact.ts';
import { startTestControlPlane } from '../../test/helpers/control-plane.ts';
import { installAgent, installedAgentSkipReason } from '../../test/helpers/installed-agent.ts';
import { rolloutEnd } from '../../test/helpers/rollouts.ts';
import type { Rollout } from '../../test/helpers/rollouts.ts';

const { values } = parseArgs({ options: { agents: { type: 'string', default: '4' } } });
const N = Number(values.agents);
const out = (line: string) => process.stdout.write(`${line}\n`);
const fmt = (n: number, d = 0) => n.toFixed(d);

const skip = artifactSkipReason || installedAgentSkipReason;
if (skip) {
  out(`agent fleet update: skipped (${skip})`);
  process.exit(0);
}
if (!Number.isInteger(N) || N < 1 || N > 32) {
  out('agent fleet update: --agents must be 1..32');
  process.exit(2);
}

const teardowns: (() => unknown)[] = [];
const scope = { teardown: (fn: () => unknown) => void teardowns.push(fn) };
try {
  const from = await agentArtifact({ version: '0.1.0' });
  const to = await agentArtifact({ version: '0.1.1' });
  const cp = await startTestControlPlane({ config: { agentReleasesDir: releasesDir(scope, [from, to]) } });
  teardowns.push(() => cp.close());
  out(`machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${fmt(totalmem() / 2 ** 30)} GiB, load ${loadavg().map((l) => fmt(l, 2)).join(' ')}, ${process.version}`);
  const t0 = performance.now();
  const ids: string[] = [];
  for (let i = 0; i < N; i++) ids.push((await installAgent(scope, cp, { version: '0.1.0', agentConfig: { reconnect: { base_ms: 100, cap_ms: 1_000 } } })).instanceId);
  out(`${N} agents installed with install-agent.sh (0.1.0, ${fmt(from.manifest.size / 1e6, 1)} MB each) in ${fmt((performance.now() - t0) / 1000, 1)} s`);

  const run = async (label: string, body: Record<string, unknown>): Promise<void> => {
    const began = performance.now();
    const res = await cp.api<Rollout>('POST', '/api/agents/updates', { body: { instance_ids: ids, max_failures: 1, ...body } });
    if (res.status !== 202) throw new Error(`POST answered ${res.status}: ${JSON.stringify(res.body)}`);
    const done = await rolloutEnd(cp, res.body.id);
    const total = performance.now() - began;
    if (done.status !== 'succeeded') throw new Error(`rollout ${done.id} ${done.status}: ${JSON.stringify(done.agents)}`);
    const each = done.agents.map((a) => Date.parse(a.finished_at ?? '') - Date.parse(a.started_at ?? '')).sort((a, b) => a - b);
    out(`${label}: ${fmt(total / 1000, 1)} s for ${N} agents; per agent p50 ${fmt((each[Math.floor((each.length - 1) / 2)] ?? NaN) / 1000, 1)} s, max ${fmt((each.at(-1) ?? NaN) / 1000, 1)} s`);
  };
  await run(`fleet update 0.1.0 -> 0.1.1, batch size ${N}`, { version: '0.1.1', batch_size: N });
  await run('fleet update 0.1.1 -> 0.1.0, batch size 1', { version: '0.1.0', batch_size: 1, allow_downgrade: true });
} finally {
  for (const fn of teardowns.reverse()) await fn();
}
