import { z } from 'zod';
import type { RestDeployStep, RestDeployView } from '../../client/deploy-view.ts';

/** What deploy and get_deploy answer: the contract's six fields (always present), then the additions. */
export const deployAnswerSchema = z.looseObject({
  status: z.enum(['scaffolding_pr_open', 'succeeded', 'failed', 'running']).describe('Outcome of the call.'),
  pr_url: z.string().nullable().describe('GitHub PR URL; set when status is "scaffolding_pr_open".'),
  app_url: z.string().nullable().describe('Live HTTPS URL of the app; set on "succeeded".'),
  run_url: z.string().nullable().describe('GitHub Actions run URL of the deploy workflow; set once a run exists.'),
  instance_id: z.string().nullable().describe('ID of the VM that was provisioned or reused.'),
  deploy_id: z.string().nullable().describe('Deploy record id; poll it with get_deploy. Null in the scaffolding phase.'),
  message: z.string().describe('What happened and what to do next, in a sentence or two.'),
  current_step: z.string().nullable().optional().describe('The step under way while status is "running".'),
  failed_step: z.string().nullable().optional().describe('The step that failed when status is "failed".'),
  error: z
    .object({ error: z.string(), message: z.string() })
    .nullable()
    .optional()
    .describe('Why it failed when status is "failed": a registered error key and a sentence.'),
  steps: z
    .array(z.looseObject({ name: z.string(), state: z.string() }))
    .optional()
    .describe('Every step with its state, times and error.'),
});

const STATUSES = new Set(['scaffolding_pr_open', 'succeeded', 'failed', 'running']);

function str(v: string | null | undefined): string | null {
  return typeof v === 'string' && v !== '' ? v : null;
}

function failedStepOf(view: RestDeployView): RestDeployStep | undefined {
  const steps = view.steps ?? [];
  return steps.find((s) => s.name === view.failed_step) ?? steps.find((s) => s.state === 'failed');
}

function sentence(view: RestDeployView, deployId: string | null): string {
  const backend = str(view.message);
  switch (view.status) {
    case 'scaffolding_pr_open':
      return (
        backend ??
        `VMKit opened a pull request adding .github/workflows/vmkit-deploy.yml and a starter Kamal config: ${view.pr_url ?? '(no URL)'}. ` +
          'Review it, add the repository secrets its description lists, merge it, then call deploy again.'
      );
    case 'succeeded':
      return `Deployed${view.sha ? ` ${view.sha.slice(0, 12)}` : ''}; the app is live at ${view.app_url ?? '(no URL)'}.`;
    case 'failed': {
      const step = view.failed_step ?? failedStepOf(view)?.name ?? view.current_step ?? 'an unknown step';
      const why = str(view.error_message) ?? str(failedStepOf(view)?.error_message) ?? 'no reason was recorded';
      return `The deploy failed at step ${step}: ${why}${view.run_url ? ` (run: ${view.run_url})` : ''}`;
    }
    default:
      return (
        `The deploy is still running${view.current_step ? ` (step ${view.current_step})` : ''}. ` +
        `Call get_deploy with deploy_id ${deployId ?? '(unknown)'} to follow it; calling deploy again answers the same deploy.`
      );
  }
}

/**
 * The tool answer for a REST deploy view: the contract's fields first, in its order, all
 * present (null where the contract says), then a sentence and the step record. In the
 * scaffolding phase only pr_url is set, as the contract's example shows.
 */
export function deployAnswer(view: RestDeployView): Record<string, unknown> {
  const status = STATUSES.has(view.status) ? view.status : 'running';
  const scaffolding = status === 'scaffolding_pr_open';
  const deployId = scaffolding ? null : str(view.deploy_id);
  const failed = status === 'failed';
  const failedStep = failed ? (str(view.failed_step) ?? failedStepOf(view)?.name ?? null) : null;
  const errKey = str(view.error_key) ?? str(failedStepOf(view)?.error_key) ?? 'deploy_failed';
  const errMessage = str(view.error_message) ?? str(failedStepOf(view)?.error_message) ?? `The deploy failed at step ${failedStep ?? 'unknown'}.`;
  return {
    status,
    pr_url: scaffolding ? str(view.pr_url) : null,
    app_url: scaffolding ? null : str(view.app_url),
    run_url: scaffolding ? null : str(view.run_url),
    instance_id: scaffolding ? null : str(view.instance_id),
    deploy_id: deployId,
    message: sentence({ ...view, status }, deployId),
    ...(status === 'running' ? { current_step: str(view.current_step) } : {}),
    ...(failed ? { failed_step: failedStep, error: { error: errKey, message: errMessage } } : {}),
    ...(view.steps && !scaffolding
      ? {
          steps: view.steps.map((s) => ({
            name: s.name,
            state: s.state,
            started_at: s.started_at ?? null,
            finished_at: s.finished_at ?? null,
            ...(s.attempts === undefined || s.attempts === null ? {} : { attempts: s.attempts }),
            ...(s.error_key ? { error_key: s.error_key, error_message: s.error_message ?? null } : {}),
          })),
        }
      : {}),
  };
}

export function isTerminal(status: string): boolean {
  return status !== 'running';
}

function seconds(step: RestDeployStep): string {
  const from = step.started_at ? Date.parse(step.started_at) : NaN;
  const to = step.finished_at ? Date.parse(step.finished_at) : NaN;
  return Number.isFinite(from) && Number.isFinite(to) ? ` in ${((to - from) / 1000).toFixed(1)} s` : '';
}

/** One line per step change: "provisioning: running", "dns: succeeded in 0.2 s", "hardening: failed — why". */
export function stepLine(step: RestDeployStep): string {
  if (step.state === 'failed') return `${step.name}: failed${seconds(step)} — ${step.error_message ?? step.error_key ?? 'no reason recorded'}`;
  if (step.state === 'succeeded' || step.state === 'skipped') return `${step.name}: ${step.state}${seconds(step)}`;
  const attempt = step.attempts !== undefined && step.attempts !== null && step.attempts > 1 ? ` (attempt ${step.attempts})` : '';
  return `${step.name}: ${step.state}${attempt}`;
}
