import { setTimeout as delay } from 'node:timers/promises';
import { z } from 'zod';
import { errorBody, repoFullNameSchema } from '@vmkit/protocol';
import { defineTool, errorResult, expectOk, okResult, seg, untilAborted } from '../tool.ts';
import type { ToolContext } from '../tool.ts';
import { StepChanges, restDeployView } from '../../client/deploy-view.ts';
import type { RestDeployView } from '../../client/deploy-view.ts';
import { deployAnswer, deployAnswerSchema, isTerminal, stepLine } from './deploy-answer.ts';

/** Longest single long-poll of the deploy record; the server answers sooner when a step changes. */
const POLL_SLICE_MS = 15_000;
/** A server that answers a long-poll at once without news is not asked again sooner than this. */
const MIN_POLL_GAP_MS = 250;

function parseView(body: Record<string, unknown>) {
  const parsed = restDeployView.safeParse(body);
  if (parsed.success) return parsed.data;
  return undefined;
}

const malformed = () => errorResult({ status: 500, headers: {}, body: errorBody('internal', 'The control plane answered the deploy without a deploy record.') });

async function report(view: RestDeployView, changes: StepChanges, ctx: ToolContext, counter: { n: number }): Promise<void> {
  for (const step of changes.changed(view)) {
    counter.n += 1;
    await ctx.progress(counter.n, stepLine(step));
  }
}

/** Follows a running deploy until it ends, the wait bound runs out, or the client cancels. */
async function follow(first: RestDeployView, ctx: ToolContext, started: number) {
  const changes = new StepChanges();
  const counter = { n: 0 };
  const deployId = first.deploy_id ?? '';
  let view = first;
  // Cancelled: answer at once and ask and send nothing more; the deploy itself goes on (it
  // is persisted and resumable), and deploy or get_deploy reports its outcome later.
  const cancelled = () => okResult({ ...deployAnswer(view), message: `Cancelled by the client; the deploy goes on. Call get_deploy with deploy_id ${deployId} to follow it.` });
  await report(view, changes, ctx, counter);
  for (;;) {
    if (isTerminal(view.status)) return okResult(deployAnswer(view));
    const remaining = ctx.maxWaitMs - (Date.now() - started);
    if (remaining <= 0) return okResult(deployAnswer(view));
    // The cancellation may have come while a progress notification was on its way.
    if (ctx.signal.aborted) return cancelled();
    const asked = Date.now();
    const query = new URLSearchParams({ wait_ms: String(Math.min(POLL_SLICE_MS, remaining)) });
    if (view.updated_at) query.set('after', view.updated_at);
    const res = await untilAborted(ctx.call({ method: 'GET', path: `/api/deploys/${seg(deployId)}?${query.toString()}` }), ctx.signal);
    if (res === undefined) return cancelled();
    const next = parseView(expectOk(res));
    if (!next) return malformed();
    const news = next.updated_at !== view.updated_at || next.status !== view.status;
    view = next;
    await report(view, changes, ctx, counter);
    if (!news && Date.now() - asked < MIN_POLL_GAP_MS) await delay(MIN_POLL_GAP_MS, undefined, { signal: ctx.signal }).catch(() => undefined);
  }
}

export const deploy = defineTool({
  name: 'deploy',
  title: 'Deploy a repository',
  description:
    'Deploys a repository to a named environment (e.g. staging) of your VMKit workspace. Two phases. First call, when the ' +
    'repo has no .github/workflows/vmkit-deploy.yml on its default branch: VMKit opens a pull request adding that workflow ' +
    'and a starter Kamal config and answers status "scaffolding_pr_open" with pr_url (the other fields null); a repeat ' +
    'call answers the same PR. Ask the user to review and merge it (and add the secrets its description lists), then call ' +
    'deploy again. Later calls provision a VM for the environment (or reuse it), wait for its agent, harden it, register ' +
    'DNS, dispatch the GitHub Actions workflow and follow the run: "succeeded" with app_url, run_url, instance_id and ' +
    'deploy_id, or "failed" with failed_step, error and run_url when a run exists. If it takes longer than the wait bound ' +
    '(under a minute) it answers "running" with deploy_id: poll with get_deploy; calling deploy again while it runs ' +
    'answers the same deploy, never a second one. Sends a progress notification per step when asked for progress.',
  inputSchema: z.object({
    repo: repoFullNameSchema.describe('Repository in owner/repo-name format, connected to your VMKit workspace.'),
    dest: z
      .string()
      .min(1)
      .max(64)
      .describe('Environment name (e.g. "staging", "production"); it must exist for this repo in the workspace.'),
    sha: z
      .string()
      .min(1)
      .max(64)
      .optional()
      .describe('Git commit SHA to deploy. Defaults to the head of the default branch.'),
  }),
  outputSchema: deployAnswerSchema,
  // Not destructive: it adds a VM, a DNS record and a release; it never removes the user's data.
  annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: true },
  async run(args, ctx) {
    const started = Date.now();
    const res = await ctx.call({
      method: 'POST',
      path: '/api/deploys',
      body: { repo: args.repo, dest: args.dest, ...(args.sha === undefined ? {} : { sha: args.sha }), wait_ms: 0 },
    });
    const view = parseView(expectOk(res));
    if (!view) return malformed();
    if (view.status === 'scaffolding_pr_open') return okResult(deployAnswer(view));
    return follow(view, ctx, started);
  },
});
