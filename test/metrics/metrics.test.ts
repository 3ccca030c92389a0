// /metrics: Prometheus text of one control-plane process, after real traffic (a real
// agent process connecting and refused, a command it runs, REST calls, an MCP tool call
// through the SDK client), behind the admin scope or on its own listen address.
import t from 'tap';
import { newId } from '@vmkit/protocol';
import { HANDSHAKE_REFUSALS } from '../../control-plane/src/hub/agent-hub.ts';
import { AgentNotConnectedError } from '../../control-plane/src/hub/errors.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { connectMcp } from '../helpers/mcp-client.ts';
import { enrollRealAgent, waitAgentState } from '../helpers/real-agent.ts';
import { parsePromText } from '../helpers/prom-text.ts';
import type { Scrape } from '../helpers/prom-text.ts';

// Real agent processes on a shared, loaded machine.
t.setTimeout(600_000);

async function scrape(cp: TestControlPlane, key: string = cp.adminKey): Promise<Scrape> {
  const res = await fetch(`${cp.url}/metrics`, { headers: { authorization: `Bearer ${key}` } });
  if (res.status !== 200) throw new Error(`/metrics answered ${res.status}: ${await res.text()}`);
  return parsePromText(await res.text());
}

/** Waits for a condition the hub reaches by itself (an agent's retry), checking between its events. */
async function until(what: string, probe: () => boolean, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!probe()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

t.test('a scrape after real traffic shows every series, and the counts moved', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const hub = cp.ctx.hub;
  const bus = cp.ctx.commandBus;
  if (!hub || !bus) throw new Error('the test control plane runs no hub');
  const before = await scrape(cp);
  const rest = { method: 'GET', route: '/api/instances', status_class: '2xx', channel: 'rest' };
  const restBefore = before.value('vmkit_http_request_duration_seconds_count', rest) ?? 0;

  // An agent whose id the control plane does not know is refused; then it connects as itself.
  const agent = await enrollRealAgent(t, cp, { name: 'metrics-agent' });
  agent.patchConfig({ agent_id: newId('agent') });
  const stranger = agent.start();
  await until('the unknown agent to be refused', () => hub.stats().refusals.unknown_agent >= 1);
  await stranger.stop();
  agent.patchConfig({ agent_id: agent.agentId });
  agent.start();
  await waitAgentState(cp, agent.instanceId, 'connected');

  // A command the agent runs, and one to an agent that is not connected.
  await bus.send(agent.agentId, 'ping', {}, { timeoutMs: 120_000 });
  await t.rejects(bus.send(newId('agent'), 'ping', {}, { requireConnected: true }), AgentNotConnectedError);

  // REST calls: three listings, one unknown instance (404 under its route pattern).
  for (let i = 0; i < 3; i++) t.equal((await cp.api('GET', '/api/instances')).status, 200);
  t.equal((await cp.api('GET', `/api/instances/${newId('instance')}`)).status, 404);

  // An MCP tool call through the SDK's client.
  const client = await connectMcp(`${cp.url}/mcp`, cp.adminKey);
  const listed = await client.callTool({ name: 'list_instances', arguments: {} });
  await client.close();
  t.not(listed.isError, true, 'list_instances answered');

  const after = await scrape(cp);
  const node = cp.ctx.nodeId;
  t.ok(after.all.length > 0);
  t.same(
    after.all.filter((s) => s.labels.node_id !== node).map((s) => s.name),
    [],
    'every series carries this process’s node id',
  );

  t.equal(after.types.get('vmkit_agents_connected'), 'gauge');
  t.equal(before.value('vmkit_agents_connected'), 0);
  t.equal(after.value('vmkit_agents_connected'), 1, 'the agent counts as connected');

  t.equal(after.types.get('vmkit_agent_handshakes_total'), 'counter');
  t.ok((after.value('vmkit_agent_handshakes_total') ?? 0) >= (before.value('vmkit_agent_handshakes_total') ?? 0) + 1, 'a handshake completed');
  t.equal(after.types.get('vmkit_agent_handshake_refusals_total'), 'counter');
  t.same(
    after.samples('vmkit_agent_handshake_refusals_total').map((s) => s.labels.reason).sort(),
    [...HANDSHAKE_REFUSALS].sort(),
    'one series per refusal reason, zeros included',
  );
  t.equal(before.value('vmkit_agent_handshake_refusals_total', { reason: 'unknown_agent' }), 0);
  t.ok((after.value('vmkit_agent_handshake_refusals_total', { reason: 'unknown_agent' }) ?? 0) >= 1, 'the unknown agent was counted by reason');

  t.equal(after.types.get('vmkit_command_duration_seconds'), 'histogram');
  t.equal(after.value('vmkit_command_duration_seconds_count', { type: 'ping', outcome: 'succeeded' }), 1, 'the ping is timed as succeeded');
  t.equal(after.value('vmkit_command_duration_seconds_count', { type: 'ping', outcome: 'not_connected' }), 1, 'the refused send is timed as not_connected');
  t.ok((after.value('vmkit_command_duration_seconds_sum', { type: 'ping', outcome: 'succeeded' }) ?? 0) > 0);

  t.equal(after.types.get('vmkit_http_request_duration_seconds'), 'histogram');
  t.equal(after.value('vmkit_http_request_duration_seconds_count', rest), restBefore + 3, 'the three listings are counted under the route pattern');
  t.ok((after.value('vmkit_http_request_duration_seconds_count', { route: '/api/instances/:id', status_class: '4xx', channel: 'rest' }) ?? 0) >= 1, 'the 404 is counted under /api/instances/:id');
  t.same(
    after.samples('vmkit_http_request_duration_seconds_count').filter((s) => /inst_|agt_/.test(s.labels.route ?? '')),
    [],
    'no id reaches a route label',
  );
  t.equal(
    after.value('vmkit_http_request_duration_seconds_count', { route: '/api/instances', method: 'GET', status_class: '2xx', channel: 'mcp' }),
    1,
    'the REST call the MCP tool made is counted with channel mcp',
  );
  const inf = after.value('vmkit_http_request_duration_seconds_bucket', { ...rest, le: '+Inf' });
  t.equal(inf, after.value('vmkit_http_request_duration_seconds_count', rest), 'the +Inf bucket holds every observation');

  t.equal(after.types.get('vmkit_mcp_tool_call_duration_seconds'), 'histogram');
  t.equal(after.value('vmkit_mcp_tool_call_duration_seconds_count', { tool: 'list_instances', outcome: 'ok' }), 1, 'the tool call is timed');

  t.equal(after.types.get('vmkit_deploy_step_duration_seconds'), 'histogram', 'deploy steps are declared (none ran here)');
  t.equal(after.value('vmkit_shell_sessions_open'), 0);
  const dialect = cp.ctx.db.dialect;
  t.equal(after.value('vmkit_db_up', { dialect }), 1, 'the database answered');
  t.equal(after.value('vmkit_db_migrations_pending', { dialect }), 0);
  t.ok((after.value('vmkit_db_check_seconds', { dialect }) ?? -1) >= 0, 'the check was timed');
  if (dialect === 'sqlite') t.equal(after.samples('vmkit_db_pool_connections').length, 0, 'SQLite has no pool to report');
  else t.ok(after.samples('vmkit_db_pool_connections').length > 0, 'the PostgreSQL pool is reported');

  t.ok((after.value('process_cpu_user_seconds_total') ?? 0) > 0, 'process metrics (prom-client defaults)');
  t.ok((after.value('nodejs_heap_size_used_bytes') ?? 0) > 0);
  t.ok(after.types.has('nodejs_eventloop_lag_seconds'));
});

t.test('an MCP tool call that fails is timed under its error key', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const { secret } = await cp.createKey(['repos:read']);
  const narrow = await connectMcp(`${cp.url}/mcp`, secret);
  const denied = await narrow.callTool({ name: 'list_instances', arguments: {} });
  await narrow.close();
  t.equal(denied.isError, true, 'a key without instances:read is refused');
  const admin = await connectMcp(`${cp.url}/mcp`, cp.adminKey);
  const missing = await admin.callTool({ name: 'get_instance', arguments: { instance_id: newId('instance') } });
  await admin.close();
  t.equal(missing.isError, true);
  const s = await scrape(cp);
  t.equal(s.value('vmkit_mcp_tool_call_duration_seconds_count', { tool: 'list_instances', outcome: 'unauthorized' }), 1);
  t.equal(s.value('vmkit_mcp_tool_call_duration_seconds_count', { tool: 'get_instance', outcome: 'instance_not_found' }), 1);
  t.equal(s.samples('vmkit_mcp_tool_call_duration_seconds_count').length, 2, 'nothing else was called');
});

t.test('/metrics on the main port needs a key with the admin scope', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const none = await fetch(`${cp.url}/metrics`);
  t.equal(none.status, 401);
  t.match(await none.json(), { error: 'unauthorized' });
  const { secret } = await cp.createKey(['instances:read', 'deploys:read', 'shell']);
  const narrow = await fetch(`${cp.url}/metrics`, { headers: { authorization: `Bearer ${secret}` } });
  t.equal(narrow.status, 403);
  t.match(await narrow.json(), { error: 'forbidden', message: /lacks the scope admin/ });
  const admin = await fetch(`${cp.url}/metrics`, { headers: { authorization: `Bearer ${cp.adminKey}` } });
  t.equal(admin.status, 200);
  t.match(admin.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  t.match(await admin.text(), /^# HELP /m);
});

t.test('the metrics listener serves /metrics without a key, on a port of its own', async (t) => {
  const cp = await startTestControlPlane({ config: { metricsListen: { host: '127.0.0.1', port: 0 } } });
  t.teardown(() => cp.close());
  const url = cp.ctx.metricsListenUrl;
  if (url === undefined) throw new Error('the metrics listener did not start');
  t.not(new URL(url).port, new URL(cp.url).port, 'not the main port');
  await cp.api('GET', '/api/instances');
  const res = await fetch(`${url}/metrics`);
  t.equal(res.status, 200, 'no key needed');
  const s = parsePromText(await res.text());
  t.equal(s.value('vmkit_http_request_duration_seconds_count', { route: '/api/instances', channel: 'rest' }), 1, 'the same registry as the main port');
  t.equal(s.all.find((x) => x.labels.node_id !== cp.ctx.nodeId), undefined);
  t.equal((await fetch(`${url}/api/instances`)).status, 404, 'nothing but /metrics is served there');
  t.equal((await fetch(`${url}/readyz`)).status, 404);
  t.equal((await fetch(`${url}/metrics`, { method: 'POST' })).status, 405);
  t.equal((await fetch(`${cp.url}/metrics`)).status, 401, 'the main port still asks for a key');
  await cp.close();
  await t.rejects(fetch(`${url}/metrics`), 'the listener closes with the control plane');
});

t.test('without --metrics-listen there is no second listener', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  t.equal(cp.ctx.metricsListenUrl, undefined);
});

t.test('unknown routes collapse into one series: probing paths cannot grow the label set', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  for (let i = 0; i < 25; i++) {
    t.equal((await cp.api('GET', `/probe-${i}/${newId('instance')}`)).status, 404);
    await cp.api('PUT', `/api/instances-${i}`);
  }
  t.equal((await cp.api('GET', '/%E0%A4%A')).status, 400, 'a path that does not decode');
  const s = await scrape(cp);
  const routes = new Set(s.samples('vmkit_http_request_duration_seconds_count').map((x) => x.labels.route));
  t.same([...routes].filter((r) => r !== '/metrics').sort(), ['unmatched'], 'every unknown path is `unmatched`');
  t.equal(s.value('vmkit_http_request_duration_seconds_count', { route: 'unmatched', method: 'GET', status_class: '4xx', channel: 'rest' }), 26);
  t.equal(s.value('vmkit_http_request_duration_seconds_count', { route: 'unmatched', method: 'PUT', status_class: '4xx', channel: 'rest' }), 25);
});

t.test('the node id: --node-id wins, else one is kept in the data dir across restarts', async (t) => {
  const named = await startTestControlPlane({ config: { nodeId: 'cp-east-1' } });
  t.teardown(() => named.close());
  t.equal(named.ctx.nodeId, 'cp-east-1');
  t.equal((await scrape(named)).value('vmkit_agents_connected', { node_id: 'cp-east-1' }), 0);

  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const first = cp.ctx.nodeId;
  t.match(first, /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/);
  await cp.restart();
  t.equal(cp.ctx.nodeId, first, 'the same node after a restart');
  const other = await startTestControlPlane();
  t.teardown(() => other.close());
  t.not(other.ctx.nodeId, first, 'another data dir is another node');
});
