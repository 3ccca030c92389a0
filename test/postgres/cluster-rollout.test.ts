/**
 * An agent rollout started through process B reaches an agent that process A holds (two
 * control planes on one PostgreSQL). The agent runs from source, not installed as a
 * release, so it answers agent.update with update_refused: the answer can only have
 * come from the agent itself, on A.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { platformOf } from '@vmkit/protocol';
import { startTestCluster } from '../helpers/cluster.ts';
import { freePort } from '../helpers/cp-process.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { uniqueInstanceName } from '../helpers/control-plane.ts';
import { postgresMissing } from '../helpers/postgres.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { enrollRealAgent, plainBashShell, waitAgentState } from '../helpers/real-agent.ts';
import { rolloutEnd } from '../helpers/rollouts.ts';
import type { Rollout } from '../helpers/rollouts.ts';

t.setTimeout(600_000);

const PLATFORM = platformOf(process.platform, process.arch) ?? 'linux-x64';

if (fileNeeds(postgresMissing())) {
  t.test('a rollout started through B updates (here: asks) the agent held by A', async (t) => {
    const releases = mkdtempSync(join(tmpdir(), 'vmkit-cluster-releases-'));
    t.teardown(() => rmSync(releases, { recursive: true, force: true }));
    mkdirSync(join(releases, '0.2.0', PLATFORM), { recursive: true });
    writeFileSync(join(releases, '0.2.0', PLATFORM, 'vmkit-agent'), '#!/bin/sh\necho 0.2.0\n', { mode: 0o755 });
    // One public URL for the fleet, as behind a load balancer (here: A's own address), so
    // the release URL B names is one the agent knows as its control plane.
    const portA = await freePort();
    const publicUrl = `http://127.0.0.1:${portA}`;
    const { nodes } = await startTestCluster(t, {
      nodeIds: ['roll-a', 'roll-b'],
      config: { publicUrl, agentReleasesDir: releases, agentHub: { nodeHeartbeatMs: 300, nodeStaleAfterMs: 10_000 } },
      nodeConfig: (i) => (i === 0 ? { port: portA } : {}),
    });
    const [a, b] = nodes as [TestControlPlane, TestControlPlane];

    const agent = await enrollRealAgent(t, a, { name: uniqueInstanceName('cluster-roll') });
    agent.patchConfig({ shell: { program: plainBashShell() } });
    const proc = agent.start();
    await waitAgentState(a, agent.instanceId, 'connected');
    t.ok(a.ctx.hub?.isConnected(agent.agentId), 'A holds the agent');
    t.notOk(b.ctx.hub?.isConnected(agent.agentId), 'B does not');

    const started = await b.api<Rollout & { error?: string; message?: string }>('POST', '/api/agents/updates', {
      body: { version: '0.2.0', instance_ids: [agent.instanceId], batch_size: 1, max_failures: 1 },
    });
    t.equal(started.status, 202, `B started the rollout (it refused an agent held elsewhere as not connected before): ${JSON.stringify(started.body)}`);
    const done = await rolloutEnd(b, started.body.id);
    const target = done.agents[0];
    t.equal(target?.instance_id, agent.instanceId);
    t.equal(target?.error_key, 'update_refused', `the agent on A answered: ${target?.error_message ?? ''}`);
    t.match(target?.error_message, /cannot update itself/, 'after checking the release URL: it is not installed as a release');
    t.ok(target?.command_id, 'the update was sent as a command');
    t.equal(proc.lines(new RegExp(`executing command.*${target?.command_id ?? 'none'}`)).length, 1, 'the agent ran it once');
    t.equal(done.status, 'failed', 'its one agent had its turn and failed');
    t.match(done.error_message, /1 agent update failed \(max_failures 1, reached by the last batch: no agent was left to skip\)/);
  });
}
