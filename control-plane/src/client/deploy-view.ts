/**
 * A deploy record as the control plane's own REST clients (the MCP deploy tools, the
 * `vmkit` CLI) read it from `GET /api/deploys/{id}`, and how they follow its steps.
 */
import { z } from 'zod';

/**
 * The REST deploy view (`GET /api/deploys/{id}`), as far as its clients rely on it.
 * Loose on purpose: the REST view is the source of truth for every other field.
 */
export const restDeployStep = z.looseObject({
  seq: z.number(),
  name: z.string(),
  state: z.string(),
  error_key: z.string().nullable().optional(),
  error_message: z.string().nullable().optional(),
  attempts: z.number().nullable().optional(),
  started_at: z.string().nullable().optional(),
  finished_at: z.string().nullable().optional(),
});
export type RestDeployStep = z.infer<typeof restDeployStep>;

export const restDeployView = z.looseObject({
  deploy_id: z.string().nullable().optional(),
  status: z.string(),
  pr_url: z.string().nullable().optional(),
  app_url: z.string().nullable().optional(),
  run_url: z.string().nullable().optional(),
  instance_id: z.string().nullable().optional(),
  sha: z.string().nullable().optional(),
  current_step: z.string().nullable().optional(),
  failed_step: z.string().nullable().optional(),
  error_key: z.string().nullable().optional(),
  error_message: z.string().nullable().optional(),
  message: z.string().nullable().optional(),
  steps: z.array(restDeployStep).optional(),
  updated_at: z.string().optional(),
});
export type RestDeployView = z.infer<typeof restDeployView>;

/**
 * Remembers what each step looked like, so every view passed in yields only the steps that
 * changed since (pending steps are not news).
 */
export class StepChanges {
  readonly #seen = new Map<string, string>();

  changed(view: RestDeployView): RestDeployStep[] {
    const out: RestDeployStep[] = [];
    for (const step of [...(view.steps ?? [])].sort((a, b) => a.seq - b.seq)) {
      const key = `${step.state}/${step.attempts ?? ''}`;
      if (this.#seen.get(step.name) === key) continue;
      this.#seen.set(step.name, key);
      if (step.state !== 'pending') out.push(step);
    }
    return out;
  }
}
