/**
 * The `harden` executor: kamal user, docker group and socket, deploy keys, and an sshd
 * configuration that refuses root and passwords, applied so it can never lock the
 * owner out. `runHarden` is the executor; `hardenExecutor` plugs it into the agent's
 * executor registry.
 */
import type { ExecutorSpec } from '../types.ts';
import { runHarden } from './runner.ts';
import type { HardenEnv } from './runner.ts';

export { runHarden } from './runner.ts';
export type { HardenEnv, HardenOutcome, HardenProgress, HardenReport } from './runner.ts';
export { planHarden } from './plan.ts';
export type { PlanOptions } from './plan.ts';
export { takeSnapshot } from './snapshot.ts';
export { recoverHardenAtStart, clearHardenJournal } from './recover.ts';
export type { Recovery } from './recover.ts';
export { defaultPaths } from './types.ts';
export type { HardenOutput, HardenPaths, HardenPlan, StepReport, SystemSnapshot } from './types.ts';
export { DROP_IN_NAME, BLOCK_BEGIN, BLOCK_END, MATCH_MARKER } from './sshd-plan.ts';

/** The registry entry: exclusive, since it changes the system. */
export function hardenExecutorSpec(env: HardenEnv = {}): ExecutorSpec<'harden'> {
  return {
    exclusive: true,
    run: async (params, ctx) => {
      const outcome = await runHarden(params, { ...env, commandId: ctx.command.id }, (p) => ctx.progress(p.step, p.state, p.message, p.detail));
      // Typed by shared-protocol's hardenResultSchema; the control plane parses it.
      const output: Record<string, unknown> = outcome.output;
      return outcome.ok ? { status: 'succeeded', output } : { status: 'failed', error: outcome.error, output };
    },
  };
}

export const hardenExecutor: ExecutorSpec<'harden'> = hardenExecutorSpec();
