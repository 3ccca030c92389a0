/**
 * `provider` of POST /api/instances: `manual` is the documented default, never a silent one.
 * The answer says what a manual instance is and what to do next, the OpenAPI document names
 * the default and every choice, and the CLI asks for the choice outright.
 */
import t from 'tap';
import { MANUAL_STATUS_REASON } from '../../control-plane/src/services/instances.ts';
import { startTestControlPlane, uniqueInstanceName } from '../helpers/control-plane.ts';
import { eventually } from '../helpers/cp-process.ts';
import { enrollRealAgent, waitAgentState } from '../helpers/real-agent.ts';
import { vmkitCli } from '../helpers/vmkit-cli.ts';

interface InstanceBody {
  id: string;
  name: string;
  provider: string;
  status: string;
  status_reason: string | null;
}

const cp = await startTestControlPlane({ config: { rateLimit: { max: 1000 } } });
t.teardown(() => cp.close());
const vmkit = vmkitCli(t, () => ({ url: cp.url, key: cp.adminKey }));

t.test('leaving out provider makes a manual instance whose answer says so and what to do next', async (t) => {
  const res = await cp.api<InstanceBody>('POST', '/api/instances', { body: { name: uniqueInstanceName('no-provider') } });
  t.equal(res.status, 201);
  t.match(res.body, { provider: 'manual', status: 'awaiting_agent' });
  t.equal(res.body.status_reason, MANUAL_STATUS_REASON);
  t.match(res.body.status_reason, /provider "manual" \(the default when provider is left out\)/, 'names the default it applied');
  t.match(res.body.status_reason, /POST \/api\/instances\/\{id\}\/enrollment-token/, 'says how to enroll the agent');
  t.match(res.body.status_reason, /provider "local" or "hetzner"/, 'and how to get a VM made instead');
  const got = await cp.api<InstanceBody>('GET', `/api/instances/${res.body.id}`);
  t.equal(got.body.status_reason, MANUAL_STATUS_REASON, 'GET shows the same while it waits');
});

t.test('an explicit manual answers the same', async (t) => {
  const res = await cp.api<InstanceBody>('POST', '/api/instances', { body: { name: uniqueInstanceName('manual'), provider: 'manual' } });
  t.equal(res.status, 201);
  t.match(res.body, { provider: 'manual', status: 'awaiting_agent', status_reason: MANUAL_STATUS_REASON });
});

t.test('an unknown provider is refused and makes nothing', async (t) => {
  const name = uniqueInstanceName('unknown');
  const res = await cp.api<{ error: string; message: string }>('POST', '/api/instances', { body: { name, provider: 'nimbus' } });
  t.equal(res.status, 409);
  t.equal(res.body.error, 'compute_target_missing');
  t.match(res.body.message, /"nimbus"/);
  const list = await cp.api<{ items: InstanceBody[] }>('GET', '/api/instances');
  t.notOk(list.body.items.some((i) => i.name === name), 'no instance was made');
});

t.test('once its agent connects the instance is running and the note is gone', async (t) => {
  const agent = await enrollRealAgent(t, cp, { name: uniqueInstanceName('enrolled') });
  const before = await cp.api<InstanceBody>('GET', `/api/instances/${agent.instanceId}`);
  t.match(before.body, { provider: 'manual', status: 'awaiting_agent', status_reason: MANUAL_STATUS_REASON });
  agent.start();
  await waitAgentState(cp, agent.instanceId, 'connected');
  // The status moves right after the connection is recorded.
  const after = await eventually('the status following the agent', async () => {
    const got = (await cp.api<InstanceBody>('GET', `/api/instances/${agent.instanceId}`)).body;
    return got.status !== 'awaiting_agent' ? got : undefined;
  }, 30_000);
  t.equal(after.status, 'running');
  t.equal(after.status_reason, null);
});

t.test('the OpenAPI document names the default and every choice', async (t) => {
  type Doc = {
    paths: Record<string, Record<string, { summary?: string; requestBody?: { content: Record<string, { schema: { properties: Record<string, { default?: unknown; description?: string }>; required?: string[] } }> } }>>;
  };
  const doc = (await cp.api<Doc>('GET', '/api/openapi.json', { key: null })).body;
  const post = doc.paths['/api/instances']?.post;
  const body = post?.requestBody?.content['application/json']?.schema;
  const provider = body?.properties.provider;
  t.equal(provider?.default, 'manual', 'default: manual');
  t.notOk(body?.required?.includes('provider'), 'provider may be left out');
  for (const choice of ['local:', 'hetzner:', 'manual (the default when left out)']) t.match(provider?.description, choice);
  t.match(post?.summary, /provider manual, the default/);
});

t.test('the CLI asks for the provider and explains the choices; a manual one prints what to do next', async (t) => {
  const none = await vmkit(['instances', 'create', uniqueInstanceName('cli')]);
  t.equal(none.code, 2);
  t.match(none.stderr, /^--provider is required: local \(.*\), hetzner \(.*\), or manual \(.*what the REST API assumes when provider is left out\)/);
  const help = await vmkit(['--help']);
  t.match(help.stdout, /manual: a\s+machine you enroll yourself \(the REST API's default\)/);
  const made = await vmkit(['instances', 'create', uniqueInstanceName('cli'), '--provider', 'manual']);
  t.equal(made.code, 0, made.stderr);
  const id = /is (inst_[0-9a-z]{26}) \(manual, awaiting_agent\)\.\n/.exec(made.stdout)?.[1];
  t.ok(id, 'the first line names the id, provider and status');
  t.match(made.stdout, `POST /api/instances/${id}/enrollment-token`, 'the next step with this instance id');
});
