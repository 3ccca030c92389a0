/**
 * The MCP `deploy` and `get_deploy` tools through the real MCP server and the SDK's
 * client against the real control plane and deploy service (GitHub is the local
 * stand-in, the VM a local sandbox): what they answer in each phase, the progress they
 * send, the bounded wait, failures and cancellation. The server is connected over an
 * in-memory transport whose REST calls go into the control plane unchanged and are
 * recorded, so a test can say which calls a tool made and choose its wait bound; the
 * Streamable HTTP endpoint and the whole flow in a real process are in test/deploy-e2e/.
 */
import t from 'tap';
import type { Test } from 'tap';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { InMemoryTransport } from '@modelcontextprotocol/sdk/inMemory.js';
import { ProgressNotificationSchema } from '@modelcontextprotocol/sdk/types.js';
import { createMcpServer } from '../../control-plane/src/mcp/server.ts';
import { TOOLS } from '../../control-plane/src/mcp/tools/index.ts';
import { AUTH_FAILED_TEXT } from '../../control-plane/src/mcp/tool.ts';
import { InProcessGateway } from '../../control-plane/src/mcp/gateway.ts';
import type { GatewayRequest, GatewayResponse, RestGateway } from '../../control-plane/src/mcp/gateway.ts';
import { textOf } from '../helpers/mcp-client.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { sandboxSkipReason } from '../helpers/sandbox.ts';
import { DEST, FULL, deployRig } from '../helpers/deploy-rig.ts';
import type { DeployBody, DeployRig } from '../helpers/deploy-rig.ts';

t.setTimeout(900_000);

const CONTRACT = ['status', 'pr_url', 'app_url', 'run_url', 'instance_id', 'deploy_id'];
const SECOND_PHASE = ['provisioning', 'waiting_for_agent', 'hardening', 'dns', 'dispatching', 'running_workflow'];
const APP_URL = 'https://shop-staging.vmkit.internal';

/** Passes every REST call of the tools into the control plane with the caller's key, and records it. */
class RecordingGateway implements RestGateway {
  readonly requests: GatewayRequest[] = [];
  readonly #inner: RestGateway;
  readonly #key: string;

  constructor(inner: RestGateway, key: string) {
    this.#inner = inner;
    this.#key = key;
  }

  request(req: GatewayRequest): Promise<GatewayResponse> {
    const sent = { ...req, authorization: `Bearer ${this.#key}` };
    this.requests.push(sent);
    return this.#inner.request(sent);
  }
}

async function connect(t: Test, rig: DeployRig, opts: { key?: string; maxWaitMs?: number } = {}) {
  const gateway = new RecordingGateway(new InProcessGateway(rig.cp.app), opts.key ?? rig.cp.adminKey);
  const server = createMcpServer({ gateway, tools: TOOLS, maxWaitMs: opts.maxWaitMs ?? 600_000 });
  const [a, b] = InMemoryTransport.createLinkedPair();
  const client = new Client({ name: 'deploy-tool-test', version: '0.0.0' });
  await server.connect(a);
  await client.connect(b);
  t.teardown(async () => {
    await client.close();
    await server.close();
  });
  return { client, requests: gateway.requests };
}

const contractOf = (out: Record<string, unknown>) => Object.fromEntries(CONTRACT.map((k) => [k, out[k]]));
const deploysOf = async (rig: DeployRig) => (await rig.cp.api<{ items: DeployBody[] }>('GET', `/api/deploys?repo=${FULL}`)).body.items;
/** A long call: its client-side timeout restarts with every progress notification. */
const LONG = { timeout: 300_000, resetTimeoutOnProgress: true, maxTotalTimeout: 900_000 };

// ---- without a VM: the pull-request phase, errors, arguments ---------------------------

const rig = await deployRig(t);

t.test('the tools are listed with the contract arguments and say how to use them', async (t) => {
  const { client } = await connect(t, rig);
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
  const { client, requests } = await connect(t, rig);
  const res = await client.callTool({ name: 'deploy', arguments: { repo: FULL, dest: DEST } });
  t.notOk(res.isError, textOf(res));
  const out = res.structuredContent as Record<string, unknown>;
  t.same(Object.keys(out).slice(0, 6), CONTRACT, 'the contract fields first, in its order');
  t.same(
    contractOf(out),
    { status: 'scaffolding_pr_open', pr_url: `https://github.com/${FULL}/pull/1`, app_url: null, run_url: null, instance_id: null, deploy_id: null },
    'as the contract example of the scaffolding phase',
  );
  t.match(out.message, /merge it, then call deploy again/);
  t.same(JSON.parse(textOf(res)), out, 'the same JSON as text');
  t.equal(requests.length, 1, 'nothing to follow: one POST');
  t.same(requests[0]?.body, { repo: FULL, dest: DEST, wait_ms: 0 });
  t.equal(rig.fake.writes.pulls(FULL).length, 1, 'the pull request is open on GitHub');
  t.same(await rig.vms(), [], 'no VM');
});

t.test('get_deploy answers the contract fields of a deploy by id; an id cannot change the route', async (t) => {
  const { client, requests } = await connect(t, rig);
  const id = (await deploysOf(rig))[0]?.id ?? '';
  t.match(id, /^dep_/);
  const res = await client.callTool({ name: 'get_deploy', arguments: { deploy_id: id } });
  t.notOk(res.isError, textOf(res));
  const out = res.structuredContent as Record<string, unknown>;
  t.same(Object.keys(out).slice(0, 6), CONTRACT);
  t.match(out, { status: 'scaffolding_pr_open', pr_url: `https://github.com/${FULL}/pull/1`, instance_id: null });
  t.equal(requests[0]?.path, `/api/deploys/${id}`);
  const odd = await client.callTool({ name: 'get_deploy', arguments: { deploy_id: '../keys' } });
  t.equal(requests[1]?.path, '/api/deploys/..%2Fkeys', 'an id cannot change the route');
  t.equal(odd.isError, true);
  t.equal((JSON.parse(textOf(odd)) as { error: string }).error, 'deploy_not_found', 'the backend answers no such deploy');
});

t.test('a contract error comes back as a tool error whose text is the backend JSON body', async (t) => {
  const { client } = await connect(t, rig);
  const res = await client.callTool({ name: 'deploy', arguments: { repo: FULL, dest: 'prod' } });
  t.equal(res.isError, true);
  const direct = await rig.cp.api('POST', '/api/deploys', { body: { repo: FULL, dest: 'prod' } });
  t.match(direct.body, { error: 'environment_not_found' });
  t.equal(textOf(res), JSON.stringify(direct.body), 'the REST body, unchanged');
});

t.test('a key without deploys:write gets the contract authentication sentence and starts nothing', async (t) => {
  const { secret } = await rig.cp.createKey(['deploys:read']);
  const { client } = await connect(t, rig, { key: secret });
  const before = (await deploysOf(rig)).length;
  const denied = await client.callTool({ name: 'deploy', arguments: { repo: FULL, dest: DEST } });
  t.equal(denied.isError, true);
  t.equal(textOf(denied), AUTH_FAILED_TEXT);
  t.equal((await deploysOf(rig)).length, before, 'no deploy on record');
});

t.test('bad arguments are refused before any REST call and make no deploy', async (t) => {
  const { client, requests } = await connect(t, rig);
  const before = await deploysOf(rig);
  const res = await client.callTool({ name: 'deploy', arguments: { repo: 'not a repo', dest: DEST } });
  t.equal(res.isError, true);
  const missing = await client.callTool({ name: 'deploy', arguments: { repo: FULL } });
  t.equal(missing.isError, true, 'dest is required');
  t.equal(requests.length, 0);
  t.same(await deploysOf(rig), before, 'the deploys are as they were');
});

t.test('a pull request closed without merging is a failed answer naming the step, not a tool error', async (t) => {
  const { client } = await connect(t, rig);
  rig.fake.writes.closePull(FULL, 1);
  const res = await client.callTool({ name: 'deploy', arguments: { repo: FULL, dest: DEST } });
  t.notOk(res.isError, textOf(res));
  const out = res.structuredContent as Record<string, unknown>;
  t.match(out, { status: 'failed', failed_step: 'scaffolding', pr_url: null, app_url: null, instance_id: null, deploy_id: /^dep_/ }, 'pr_url is for an open pull request only');
  t.match(out.error, { error: 'scaffolding_pr_closed', message: /closed without being merged/ });
  const id = (await deploysOf(rig))[0]?.id ?? '';
  const got = await client.callTool({ name: 'get_deploy', arguments: { deploy_id: id } });
  t.match(got.structuredContent, { status: 'failed', failed_step: 'scaffolding' }, 'get_deploy of the failed record says the same');
});

// ---- on a VM: the second phase followed live ------------------------------------------

t.test('on a local sandbox VM', { skip: prerequisite(sandboxSkipReason) }, async (t) => {
  const vm = await deployRig(t);
  await vm.deploy();
  vm.fake.writes.mergePull(FULL, 1);
  const runOf = (id: string) => vm.fake.writes.dispatched(FULL).find((r) => r.inputs.deploy_id === id);

  t.test('a deploy that runs to the end sends a progress notification per step change and answers succeeded', async (t) => {
    vm.fake.writes.autoRun = 'success';
    t.teardown(() => void (vm.fake.writes.autoRun = null));
    const { client, requests } = await connect(t, vm);
    const progress: Array<{ progress: number; message: string }> = [];
    const sha = vm.fake.shaOf(FULL);
    const res = await client.callTool({ name: 'deploy', arguments: { repo: FULL, dest: DEST, sha } }, undefined, {
      ...LONG,
      onprogress: (p) => progress.push({ progress: p.progress, message: p.message ?? '' }),
    });
    t.notOk(res.isError, textOf(res));
    const out = res.structuredContent as Record<string, unknown>;
    const id = String(out.deploy_id);
    t.match(contractOf(out), { status: 'succeeded', pr_url: null, app_url: APP_URL, run_url: `https://github.com/${FULL}/actions/runs/${runOf(id)?.id ?? 0}`, instance_id: /^inst_/, deploy_id: /^dep_/ });
    t.same(requests[0]?.body, { repo: FULL, dest: DEST, sha, wait_ms: 0 }, 'sha passed on');
    const lines = progress.map((p) => p.message.replace(/ in \d+\.\d s$/, ''));
    t.same(lines.filter((m) => m.endsWith(': succeeded')).map((m) => m.split(':')[0]), SECOND_PHASE, `each step's end once, in order: ${lines.join(' | ')}`);
    t.equal(new Set(lines).size, lines.length, 'every notification is a change');
    t.ok(lines.every((m) => /^\w+: (running|succeeded|skipped)$/.test(m)), 'each names a step and its new state');
    t.same(progress.map((p) => p.progress), progress.map((_p, i) => i + 1), 'progress counts up');
    const polls = requests.filter((r) => r.method === 'GET');
    t.ok(polls.length > 0 && polls.every((r) => /[?&]wait_ms=\d+/.test(r.path) && /[?&]after=/.test(r.path)), 'long-polls for the next change');
    t.same((out.steps as Array<{ name: string; state: string }>).filter((s) => s.name !== 'scaffolding').map((s) => s.state), SECOND_PHASE.map(() => 'succeeded'), 'the step record rides along');
  });

  t.test('without a progress token no notification is sent and the answer is the same', async (t) => {
    vm.fake.writes.autoRun = 'success';
    t.teardown(() => void (vm.fake.writes.autoRun = null));
    const { client } = await connect(t, vm);
    let notified = 0;
    client.setNotificationHandler(ProgressNotificationSchema, () => {
      notified++;
    });
    const res = await client.callTool({ name: 'deploy', arguments: { repo: FULL, dest: DEST } }, undefined, { timeout: 600_000 });
    t.match(res.structuredContent, { status: 'succeeded', app_url: APP_URL, instance_id: /^inst_/ }, textOf(res));
    t.equal(notified, 0);
    t.equal((await vm.vms()).length, 1, 'the VM is reused');
  });

  t.test('a deploy still running when the wait bound ends answers running with the deploy id, and get_deploy follows it to the end', async (t) => {
    const dispatched = vm.fake.writes.dispatched(FULL).length;
    const { client, requests } = await connect(t, vm, { maxWaitMs: 1_000 });
    const res = await client.callTool({ name: 'deploy', arguments: { repo: FULL, dest: DEST } });
    t.notOk(res.isError, textOf(res));
    const out = res.structuredContent as Record<string, unknown>;
    for (const k of CONTRACT) t.ok(k in out, `${k} present`);
    t.equal(out.status, 'running');
    t.match(out.deploy_id, /^dep_/);
    t.match(out.message, new RegExp(`get_deploy with deploy_id ${String(out.deploy_id)}`));
    const polls = requests.filter((r) => r.method === 'GET');
    t.ok(polls.every((r) => Number(new URL(r.path, 'http://x').searchParams.get('wait_ms')) <= 1_000), 'no poll waits past the bound');

    // The run is held until the deploy has dispatched it; then it runs and succeeds.
    const run = await vm.fake.writes.waitForDispatch(FULL, dispatched + 1);
    t.equal(run.inputs.deploy_id, out.deploy_id, 'its run');
    vm.fake.writes.startRun(FULL, run.id);
    vm.fake.writes.completeRun(FULL, run.id, 'success');
    let last: Record<string, unknown> = out;
    const deadline = Date.now() + 300_000;
    while (last.status === 'running' && Date.now() < deadline) {
      const got = await client.callTool({ name: 'get_deploy', arguments: { deploy_id: String(out.deploy_id) } });
      t.notOk(got.isError, textOf(got));
      last = got.structuredContent as Record<string, unknown>;
      if (last.status === 'running') await new Promise((r) => setTimeout(r, 200));
    }
    t.match(contractOf(last), { status: 'succeeded', app_url: APP_URL, run_url: `https://github.com/${FULL}/actions/runs/${run.id}`, deploy_id: out.deploy_id });
  });

  t.test('a failed deploy answers failed with the step, the reason and the run', async (t) => {
    vm.fake.writes.autoRun = 'failure';
    t.teardown(() => void (vm.fake.writes.autoRun = null));
    const { client } = await connect(t, vm);
    const progress: string[] = [];
    const res = await client.callTool({ name: 'deploy', arguments: { repo: FULL, dest: DEST } }, undefined, { ...LONG, onprogress: (p) => progress.push(p.message ?? '') });
    t.notOk(res.isError, 'a failed deploy is an answer, not a tool error');
    const out = res.structuredContent as Record<string, unknown>;
    t.match(out, { status: 'failed', failed_step: 'running_workflow', app_url: null, run_url: `https://github.com/${FULL}/actions/runs/${runOf(String(out.deploy_id))?.id ?? 0}` });
    t.match(out.error, { error: 'workflow_run_failed', message: /failed/ });
    t.match(out.message, /failed at step running_workflow: /);
    t.match(progress.join('\n'), /running_workflow: failed/);
  });

  t.test('a cancelled call stops following at once and sends no progress after the cancellation', async (t) => {
    const dispatched = vm.fake.writes.dispatched(FULL).length;
    const started = await vm.deploy();
    const id = started.body.deploy_id ?? '';
    // Held at its run: the deploy goes on after the cancellation, but nothing moves.
    const run = await vm.fake.writes.waitForDispatch(FULL, dispatched + 1);
    const { client, requests } = await connect(t, vm);
    const abort = new AbortController();
    let afterCancel = 0;
    const call = client.callTool({ name: 'deploy', arguments: { repo: FULL, dest: DEST } }, undefined, {
      signal: abort.signal,
      timeout: 600_000,
      onprogress: () => {
        if (abort.signal.aborted) afterCancel++;
        else abort.abort();
      },
    });
    await t.rejects(call, 'the client sees its own cancellation');
    // The server has seen the cancellation once the signal of its last REST call is aborted.
    await waitFor(() => requests.at(-1)?.signal?.aborted === true);
    const polls = requests.length;
    const get = await client.callTool({ name: 'get_deploy', arguments: { deploy_id: id } });
    t.match(get.structuredContent, { status: 'running', deploy_id: id }, 'the deploy itself goes on');
    t.equal(requests.length, polls + 1, 'only get_deploy asked since');
    t.equal(afterCancel, 0, 'no progress after the cancellation');
    vm.fake.writes.completeRun(FULL, run.id, 'success');
    t.match(await vm.until(id, (d) => d.status !== 'running'), { status: 'succeeded' });
  });
});

async function waitFor(cond: () => boolean, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met');
    await new Promise((r) => setTimeout(r, 5));
  }
}
