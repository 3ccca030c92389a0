// deploy through its faces against a real control-plane process: the MCP tool (the SDK's
// client over Streamable HTTP) for both phases with progress notifications, get_deploy,
// and `vmkit deploy --wait` showing the steps and exiting 0 or non-zero. The local
// sandbox is the VM; GitHub and Cloudflare are local stand-ins configured through the API.
import t from 'tap';
import type { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { vmkitCli } from '../helpers/vmkit-cli.ts';
import { connectMcp, textOf } from '../helpers/mcp-client.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { sandboxSkipReason } from '../helpers/sandbox.ts';
import { DEST, FULL, ZONE, deployProcess } from '../helpers/deploy-process.ts';

t.setTimeout(1_500_000);

const CONTRACT = ['status', 'pr_url', 'app_url', 'run_url', 'instance_id', 'deploy_id'];
const SECOND_PHASE = ['provisioning', 'waiting_for_agent', 'hardening', 'dns', 'dispatching', 'running_workflow'];

if (fileNeeds(sandboxSkipReason)) {
  // A wait bound long enough for a whole local deploy, so one tool call sees it end.
  const rig = await deployProcess(t, { VMKIT_MCP_MAX_WAIT_MS: '600000' });
  const cp = rig.cp();
  let client: Client = await connectMcp(`${cp.url}/mcp`, cp.adminKey);
  t.teardown(() => client.close());

  t.test('the first deploy call opens the scaffolding pull request; a repeat call answers the same one', async (t) => {
    const res = await client.callTool({ name: 'deploy', arguments: { repo: FULL, dest: DEST } }, undefined, { timeout: 120_000 });
    t.notOk(res.isError, textOf(res));
    const out = res.structuredContent as Record<string, unknown>;
    t.same(Object.keys(out).slice(0, 6), CONTRACT, 'the contract fields first');
    t.match(out, { status: 'scaffolding_pr_open', pr_url: `https://github.com/${FULL}/pull/1`, app_url: null, run_url: null, instance_id: null, deploy_id: null });
    const pulls = rig.github.writes.pulls(FULL);
    t.equal(pulls.length, 1);
    const files = rig.github.writes.branchFiles(FULL, pulls[0]?.head ?? '');
    t.ok(files?.has('.github/workflows/vmkit-deploy.yml'), 'the PR adds the workflow');
    t.ok(files?.has('config/deploy.yml'), 'and a starter Kamal config');
    const again = await client.callTool({ name: 'deploy', arguments: { repo: FULL, dest: DEST } }, undefined, { timeout: 120_000 });
    t.equal((again.structuredContent as { pr_url: string }).pr_url, out.pr_url, 'the same PR');
    t.equal(rig.github.writes.pulls(FULL).length, 1, 'never a second one');
  });

  t.test('after the merge one deploy call provisions, hardens, registers DNS, dispatches and answers succeeded, with a progress notification per step', async (t) => {
    rig.github.writes.mergePull(FULL, 1);
    rig.github.writes.autoRun = 'success';
    const progress: string[] = [];
    const res = await client.callTool({ name: 'deploy', arguments: { repo: FULL, dest: DEST } }, undefined, {
      onprogress: (p) => progress.push(p.message ?? ''),
      timeout: 120_000,
      resetTimeoutOnProgress: true,
      maxTotalTimeout: 900_000,
    });
    t.notOk(res.isError, textOf(res));
    const out = res.structuredContent as Record<string, string | null>;
    const run = rig.github.writes.dispatched(FULL)[0];
    t.match(out, {
      status: 'succeeded',
      pr_url: null,
      app_url: `https://shop-${DEST}.${ZONE}`,
      run_url: `https://github.com/${FULL}/actions/runs/${run?.id ?? 0}`,
      instance_id: /^inst_/,
      deploy_id: /^dep_/,
    });
    // Each step is reported as it starts (when the tool sees it under way) and as it ends.
    const ends = progress.filter((m) => / succeeded/.test(m)).map((m) => m.split(':')[0]);
    t.same(ends, SECOND_PHASE, `each step's end reported once, in order: ${progress.join(' | ')}`);
    t.ok(progress.some((m) => m === 'provisioning: running'), 'a step under way is reported too');
    t.same(await rig.counts(), { vms: 1, instances: 1, dnsRecords: 1, dispatches: 1 });

    const polled = await client.callTool({ name: 'get_deploy', arguments: { deploy_id: out.deploy_id ?? '' } });
    t.same(
      Object.fromEntries(CONTRACT.map((k) => [k, (polled.structuredContent as Record<string, unknown>)[k]])),
      Object.fromEntries(CONTRACT.map((k) => [k, out[k]])),
      'get_deploy answers the same',
    );
  });

  t.test('a key without deploys:write gets the contract sentence; an unknown environment the backend error', async (t) => {
    const missing = await client.callTool({ name: 'deploy', arguments: { repo: FULL, dest: 'nowhere' } });
    t.equal(missing.isError, true);
    t.equal((JSON.parse(textOf(missing)) as { error: string }).error, 'environment_not_found');
    const narrow = await cp.api<{ secret: string }>('POST', '/api/keys', { name: 'reader', scopes: ['deploys:read'] });
    const weak = await connectMcp(`${cp.url}/mcp`, narrow.body.secret);
    t.teardown(() => weak.close());
    const denied = await weak.callTool({ name: 'deploy', arguments: { repo: FULL, dest: DEST } });
    t.match(textOf(denied), /^Authentication failed — your vmk_ API key is missing, invalid, expired, or lacks the scope this tool requires\.$/);
  });

  const vmkit = vmkitCli(t, () => ({ url: rig.cp().url, key: rig.cp().adminKey }));

  t.test('vmkit deploy --wait shows a line per step and exits 0 when the deploy succeeds', async (t) => {
    rig.github.writes.autoRun = 'success';
    const out = await vmkit(['deploy', FULL, DEST, '--wait']);
    t.equal(out.code, 0, out.stderr + out.stdout);
    for (const step of ['dispatching', 'running_workflow']) t.match(out.stdout, new RegExp(`^\\d\\d:\\d\\d:\\d\\dZ  ${step} +succeeded`, 'm'), `${step} shown`);
    t.match(out.stdout, new RegExp(`app: +https://shop-${DEST}\\.apps\\.example\\.com`));
    t.equal((await rig.counts()).vms, 1, 'the VM is reused');
  });

  t.test('vmkit deploy --wait exits non-zero and names the failed step when the run fails', async (t) => {
    rig.github.writes.autoRun = 'failure';
    const out = await vmkit(['deploy', FULL, DEST, '--wait']);
    t.equal(out.code, 1, out.stderr + out.stdout);
    t.match(out.stdout, /running_workflow +failed/);
    t.match(out.stdout, /failed at step running_workflow: .*\(workflow_run_failed\)/);
    t.match(out.stdout, new RegExp(`run: +https://github\\.com/${FULL}/actions/runs/\\d+`));
    const list = await vmkit(['deploys', FULL, DEST]);
    t.equal(list.code, 0);
    t.match(list.stdout, /dep_\w+\s+failed\s+running_workflow/);
    t.match(list.stdout, /dep_\w+\s+succeeded/);
  });

  t.test('after a restart a new MCP session deploys again', async (t) => {
    await client.close();
    await rig.crash();
    client = await connectMcp(`${rig.cp().url}/mcp`, rig.cp().adminKey);
    rig.github.writes.autoRun = 'success';
    const res = await client.callTool({ name: 'deploy', arguments: { repo: FULL, dest: DEST } }, undefined, { timeout: 120_000, resetTimeoutOnProgress: true, onprogress: () => undefined, maxTotalTimeout: 900_000 });
    t.equal((res.structuredContent as { status: string }).status, 'succeeded', textOf(res));
  });
}
