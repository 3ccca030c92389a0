/**
 * The MCP `deploy` and `get_deploy` tools through the real MCP server and the SDK's
 * client, over an in-memory transport, against a scripted deploys API: what they answer
 * in each phase, the progress they send, the bounded wait and cancellation. The real
 * REST routes and the whole flow are in test/deploy-e2e/.
 */
import t from 'tap';
import type { Test } from 'tap';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import { createMcpServer } from '../../control-plane/src/mcp/server.ts';
import { TOOLS } from '../../control-plane/src/mcp/tools/index.ts';
import { AUTH_FAILED_TEXT } from '../../control-plane/src/mcp/tool.ts';
import type { RestGateway } from '../../control-plane/src/mcp/gateway.ts';
import { textOf } from '../helpers/mcp-client.ts';
import { STEPS, ScriptedDeploys } from '../helpers/scripted-deploys.ts';

const CONTRACT = ['status', 'pr_url', 'app_url', 'run_url', 'instance_id', 'deploy_id'];
async function connect(t: Test, gateway: RestGateway, maxWaitMs = 30_000): Promise<Client> {
  const server = createMcpServer({ gateway, tools: TOOLS, maxWaitMs });
  const [a, b] = InMemoryTransport.createLinkedPair();
  const client = new Client({ name: 'deploy-tool-test', version: '0.0.0' });
  await server.connect(a);
  await client.connect(b);
  t.teardown(async () => {
    await client.close();
    await server.close();
  });
  return client;
}

t.test('the tools are listed with the contract arguments and say how to use them', async (t) => {
  const client = await connect(t, new ScriptedDeploys());
  const { tools } = await client.listTools();
  const deploy = tools.find((x) => x.name === 'deploy');
  t.same(Object.keys(deploy?.inputSchema.properties ?? {}).sort(), ['dest', 'repo', 'sha'], 'exactly repo, dest, sha');
  t.same(deploy?.inputSchema.required, ['repo', 'dest'], 'sha is optional');
  t.match(deploy?.description ?? '', /scaffolding_pr_open/);
  t.match(deploy?.description ?? '', /get_deploy/);
  t.equal(deploy?.annotations?.readOnlyHint, false);
  const get = tools.find((x) => x.name === 'get_deploy');
  t.same(get?.inputSchema.required, ['deploy_id']);
  t.equal(get?.annotations?.readOnlyHint, true);
});

t.test('the first call answers the pull request with every other contract field null', async (t) => {
  const api = new ScriptedDeploys();
  api.postAnswer = {
    status: 200,
    headers: {},
    body: { ...api.view, status: 'scaffolding_pr_open', pr_url: 'https://github.com/badri/app/pull/12' },
  };
  const client = await connect(t, api);
  const res = await client.callTool({ name: 'deploy', arguments: { repo: 'badri/app', dest: 'staging' } });
  t.notOk(res.isError, textOf(res));
  const out = res.structuredContent as Record<string, unknown>;
  t.same(Object.keys(out).slice(0, 6), CONTRACT, 'the contract fields first, in its order');
  t.same(
    Object.fromEntries(CONTRACT.map((k) => [k, out[k]])),
    { status: 'scaffolding_pr_open', pr_url: 'https://github.com/badri/app/pull/12', app_url: null, run_url: null, instance_id: null, deploy_id: null },
    'as the contract example of the scaffolding phase',
  );
  t.match(out.message, /merge it, then call deploy again/);
  t.same(JSON.parse(textOf(res)), out, 'the same JSON as text');
  t.equal(api.requests.length, 1, 'nothing to follow: one POST');
  t.same(api.requests[0]?.body, { repo: 'badri/app', dest: 'staging', wait_ms: 0 });
});

t.test('a deploy that runs to the end sends a progress notification per step change and answers succeeded', async (t) => {
  const api = new ScriptedDeploys();
  const client = await connect(t, api);
  const progress: Array<{ progress: number; message?: string }> = [];
  const script = [
    () => api.advance({ name: 'provisioning', state: 'running' }),
    () => api.advance({ name: 'provisioning', state: 'succeeded' }, { instance_id: 'inst_01jx4n9abc' }),
    () => api.advance({ name: 'waiting_for_agent', state: 'succeeded' }),
    () => api.advance({ name: 'hardening', state: 'succeeded' }),
    () => api.advance({ name: 'dns', state: 'succeeded' }),
    () => api.advance({ name: 'dispatching', state: 'succeeded' }, { run_url: 'https://github.com/badri/app/actions/runs/14912345' }),
    () => api.advance({ name: 'running_workflow', state: 'succeeded' }, { status: 'succeeded', app_url: 'https://app-staging.vmkit.internal' }),
  ];
  const call = client.callTool({ name: 'deploy', arguments: { repo: 'badri/app', dest: 'staging', sha: 'abc1234' } }, undefined, {
    onprogress: (p) => {
      progress.push({ progress: p.progress, ...(p.message === undefined ? {} : { message: p.message }) });
      script.shift()?.();
    },
    timeout: 60_000,
  });
  // The first move; each progress notification then triggers the next one.
  await waitFor(() => api.requests.some((r) => r.method === 'GET'));
  script.shift()?.();
  const res = await call;
  t.notOk(res.isError, textOf(res));
  const out = res.structuredContent as Record<string, unknown>;
  t.same(Object.fromEntries(CONTRACT.map((k) => [k, out[k]])), {
    status: 'succeeded',
    pr_url: null,
    app_url: 'https://app-staging.vmkit.internal',
    run_url: 'https://github.com/badri/app/actions/runs/14912345',
    instance_id: 'inst_01jx4n9abc',
    deploy_id: 'dep_01jx5p0qr8s6n3t4u2v7w0y1z',
  });
  t.same(api.requests[0]?.body, { repo: 'badri/app', dest: 'staging', sha: 'abc1234', wait_ms: 0 }, 'sha passed on');
  t.same(
    progress.map((p) => p.message?.replace(/ in \d+\.\d s$/, '')),
    ['provisioning: running', 'provisioning: succeeded', 'waiting_for_agent: succeeded', 'hardening: succeeded', 'dns: succeeded', 'dispatching: succeeded', 'running_workflow: succeeded'],
    'one notification per step change, in order',
  );
  t.same(progress.map((p) => p.progress), [1, 2, 3, 4, 5, 6, 7], 'progress increases');
  const polls = api.requests.filter((r) => r.method === 'GET');
  t.ok(polls.every((r) => /[?&]wait_ms=\d+/.test(r.path) && /[?&]after=/.test(r.path)), 'long-polls for the next change');
  t.same((out.steps as Array<{ state: string }>).map((s) => s.state), STEPS.map(() => 'succeeded'), 'the step record rides along');
});

t.test('without a progress token no notification is sent and the answer is the same', async (t) => {
  const api = new ScriptedDeploys();
  api.postAnswer = { status: 200, headers: {}, body: { ...api.view, status: 'succeeded', app_url: 'https://a', run_url: 'https://r', instance_id: 'inst_1' } };
  const client = await connect(t, api);
  let notified = 0;
  client.setNotificationHandler((await import('@modelcontextprotocol/sdk/types.js')).ProgressNotificationSchema, () => {
    notified++;
  });
  const res = await client.callTool({ name: 'deploy', arguments: { repo: 'badri/app', dest: 'staging' } });
  t.equal((res.structuredContent as { status: string }).status, 'succeeded');
  t.equal(notified, 0);
});

t.test('a deploy still running when the wait bound ends answers running with the deploy id to poll', async (t) => {
  const api = new ScriptedDeploys();
  api.advance({ name: 'provisioning', state: 'running' });
  const client = await connect(t, api, 400);
  const res = await client.callTool({ name: 'deploy', arguments: { repo: 'badri/app', dest: 'staging' } });
  t.notOk(res.isError, textOf(res));
  const out = res.structuredContent as Record<string, unknown>;
  t.equal(out.status, 'running');
  t.equal(out.deploy_id, 'dep_01jx5p0qr8s6n3t4u2v7w0y1z');
  t.equal(out.current_step, 'provisioning');
  t.match(out.message, /get_deploy with deploy_id dep_01jx5p0qr8s6n3t4u2v7w0y1z/);
  for (const k of CONTRACT) t.ok(k in out, `${k} present`);
  const polls = api.requests.filter((r) => r.method === 'GET');
  t.ok(polls.every((r) => Number(new URL(r.path, 'http://x').searchParams.get('wait_ms')) <= 400), 'no poll waits past the bound');
});

t.test('a failed deploy answers failed with the step, the reason and the run', async (t) => {
  const api = new ScriptedDeploys();
  api.advance({ name: 'running_workflow', state: 'failed', error_key: 'workflow_run_failed', error_message: 'The run failed in job deploy.' }, {
    status: 'failed',
    failed_step: 'running_workflow',
    error_key: 'workflow_run_failed',
    error_message: 'The run failed in job deploy.',
    run_url: 'https://github.com/badri/app/actions/runs/7',
    instance_id: 'inst_1',
  });
  const client = await connect(t, api);
  const progress: string[] = [];
  const res = await client.callTool({ name: 'deploy', arguments: { repo: 'badri/app', dest: 'staging' } }, undefined, {
    onprogress: (p) => progress.push(p.message ?? ''),
  });
  t.notOk(res.isError, 'a failed deploy is an answer, not a tool error');
  const out = res.structuredContent as Record<string, unknown>;
  t.equal(out.status, 'failed');
  t.equal(out.run_url, 'https://github.com/badri/app/actions/runs/7');
  t.equal(out.app_url, null);
  t.equal(out.failed_step, 'running_workflow');
  t.same(out.error, { error: 'workflow_run_failed', message: 'The run failed in job deploy.' });
  t.match(out.message, /failed at step running_workflow: The run failed in job deploy\./);
  t.match(progress.join('\n'), /running_workflow: failed .*The run failed in job deploy\./);
});

t.test('a contract error comes back as a tool error whose text is the backend JSON body', async (t) => {
  const api = new ScriptedDeploys();
  const body = { error: 'environment_not_found', message: 'No environment named prod for badri/app.' };
  api.postAnswer = { status: 404, headers: {}, body };
  const client = await connect(t, api);
  const res = await client.callTool({ name: 'deploy', arguments: { repo: 'badri/app', dest: 'prod' } });
  t.equal(res.isError, true);
  t.equal(textOf(res), JSON.stringify(body));
  api.postAnswer = { status: 403, headers: {}, body: { error: 'forbidden', message: 'This key lacks deploys:write.' } };
  const denied = await client.callTool({ name: 'deploy', arguments: { repo: 'badri/app', dest: 'prod' } });
  t.equal(textOf(denied), AUTH_FAILED_TEXT, 'auth failures give the contract sentence');
});

t.test('bad arguments are refused before any REST call', async (t) => {
  const api = new ScriptedDeploys();
  const client = await connect(t, api);
  const res = await client.callTool({ name: 'deploy', arguments: { repo: 'not a repo', dest: 'staging' } });
  t.equal(res.isError, true);
  const extra = await client.callTool({ name: 'deploy', arguments: { repo: 'badri/app' } });
  t.equal(extra.isError, true, 'dest is required');
  t.equal(api.requests.length, 0);
});

t.test('a cancelled call stops following at once and sends no progress after the cancellation', async (t) => {
  const api = new ScriptedDeploys();
  const client = await connect(t, api);
  const abort = new AbortController();
  let afterCancel = 0;
  const call = client.callTool({ name: 'deploy', arguments: { repo: 'badri/app', dest: 'staging' } }, undefined, {
    signal: abort.signal,
    timeout: 60_000,
    onprogress: () => {
      if (abort.signal.aborted) afterCancel++;
      else abort.abort();
    },
  });
  await waitFor(() => api.requests.some((r) => r.method === 'GET'));
  api.advance({ name: 'provisioning', state: 'running' });
  await t.rejects(call, 'the client sees its own cancellation');
  // The server has seen the cancellation once the signal of its last REST call is aborted.
  await waitFor(() => api.requests.at(-1)?.signal?.aborted === true);
  const polls = api.requests.length;
  // Changes after the cancellation reach nobody: the tool is no longer polling.
  api.advance({ name: 'provisioning', state: 'succeeded' });
  api.advance({ name: 'waiting_for_agent', state: 'succeeded' });
  const get = await client.callTool({ name: 'get_deploy', arguments: { deploy_id: 'dep_01jx5p0qr8s6n3t4u2v7w0y1z' } });
  t.equal((get.structuredContent as { status: string }).status, 'running', 'the deploy itself goes on');
  t.equal(api.requests.length, polls + 1, 'only get_deploy asked since');
  t.equal(afterCancel, 0, 'no progress after the cancellation');
});

t.test('get_deploy answers the contract fields of a deploy by id; an id cannot change the route', async (t) => {
  const api = new ScriptedDeploys();
  api.advance({ name: 'provisioning', state: 'succeeded' }, { instance_id: 'inst_1' });
  const client = await connect(t, api);
  const res = await client.callTool({ name: 'get_deploy', arguments: { deploy_id: 'dep_01jx5p0qr8s6n3t4u2v7w0y1z' } });
  const out = res.structuredContent as Record<string, unknown>;
  t.same(Object.keys(out).slice(0, 6), CONTRACT);
  t.equal(out.status, 'running');
  t.equal(out.instance_id, 'inst_1');
  t.equal(api.requests[0]?.path, '/api/deploys/dep_01jx5p0qr8s6n3t4u2v7w0y1z');
  const odd = await client.callTool({ name: 'get_deploy', arguments: { deploy_id: '../keys' } });
  t.notOk(odd.isError);
  t.equal(api.requests[1]?.path, '/api/deploys/..%2Fkeys', 'an id cannot change the route');
});

async function waitFor(cond: () => boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met');
    await new Promise((r) => setImmediate(r));
  }
}
