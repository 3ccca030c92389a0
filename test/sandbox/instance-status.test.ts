// An instance's status follows its agent: a manual instance whose agent enrolled and
// connected is `running`, not `awaiting_agent`.
import t from 'tap';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { eventually } from '../helpers/cp-process.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { sandboxSkipReason, startSandbox } from '../helpers/sandbox.ts';

t.setTimeout(300_000);

const needsSandbox = { skip: prerequisite(sandboxSkipReason) };

interface InstanceBody {
  id: string;
  status: string;
  status_reason: string | null;
  agent: { state: string } | null;
}

t.test('a manual instance turns running when its agent enrolls and connects, and stays running after a restart', needsSandbox, async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const inst = await cp.api<InstanceBody>('POST', '/api/instances', { body: { name: 'by-hand' } });
  t.equal(inst.body.status, 'awaiting_agent', 'awaiting its agent at first');
  const tok = await cp.api<{ token: string }>('POST', `/api/instances/${inst.body.id}/enrollment-token`);
  await startSandbox(t, { instanceId: inst.body.id, name: 'by-hand', enrollment: { control_plane_url: cp.url, token: tok.body.token } });

  const connected = await eventually('the agent connecting', async () => {
    const got = await cp.api<InstanceBody>('GET', `/api/instances/${inst.body.id}`);
    return got.body.agent?.state === 'connected' ? got.body : undefined;
  }, 120_000, 100);
  const running = connected.status === 'running' ? connected : await eventually('the status following the agent', async () => {
    const got = await cp.api<InstanceBody>('GET', `/api/instances/${inst.body.id}`);
    return got.body.status !== 'awaiting_agent' ? got.body : undefined;
  }, 30_000, 50);
  t.equal(running.status, 'running', 'running once its agent connected');
  t.equal(running.status_reason, null);

  await cp.restart();
  const after = await cp.api<InstanceBody>('GET', `/api/instances/${inst.body.id}`);
  t.equal(after.body.status, 'running', 'a restart (agents disconnected for a moment) keeps it running');
});
