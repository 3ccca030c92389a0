import { isErrorKey } from '@vmkit/protocol';
import type { ErrorKey } from '@vmkit/protocol';
import { ApiError } from '../../errors.ts';
import { ComputeError } from '../../providers/compute/types.ts';
import { DnsError } from '../../providers/dns/types.ts';
import { GitHubError } from '../../providers/github/errors.ts';
import { githubErrorKey } from '../../providers/github/failures.ts';
import { WorkflowRunFailed } from './steps.ts';
import { timeoutAdvice } from './timings.ts';
import type { DeployStepName } from './timings.ts';

/** GitHub's failures in a request (not a step) as the REST API answers them. */
export function githubApiError(err: unknown): Error {
  if (!(err instanceof GitHubError)) return err instanceof Error ? err : new Error(String(err));
  return new ApiError(githubErrorKey(err, 'invalid_request'), err.message);
}

/** A step ran past its timeout (the abort reason of its signal). */
export class StepTimedOut extends Error {
  override name = 'StepTimedOut';
  readonly step: DeployStepName;
  readonly ms: number;
  constructor(
    step: DeployStepName,
    ms: number,
  ) {
    super(`the ${step} step timed out`);
    this.step = step;
    this.ms = ms;
  }
}

/** The control plane is closing: the step stops without an outcome and resumes at the next start. */
export class DeployShutdown extends Error {
  override name = 'DeployShutdown';
}

export interface StepFailure {
  key: ErrorKey;
  message: string;
  detail?: Record<string, unknown>;
}

/** Any error of a step as the failed deploy reports it: a registered key and a sentence that names the step. */
export function stepFailure(step: DeployStepName, err: unknown, runUrl: string | null): StepFailure {
  if (err instanceof StepTimedOut) {
    return { key: 'deploy_step_timed_out', message: `The ${step} step timed out. ${timeoutAdvice(step, Math.round(err.ms / 1000), runUrl)}` };
  }
  if (err instanceof WorkflowRunFailed) {
    return { key: 'workflow_run_failed', message: `The ${step} step failed: ${err.message}`, detail: { ...err.failure } };
  }
  const named = (key: ErrorKey, message: string): StepFailure => ({ key, message: `The ${step} step failed: ${message}` });
  if (err instanceof ApiError) return named(err.key, err.message);
  if (err instanceof ComputeError || err instanceof DnsError) return named(isErrorKey(err.key) ? err.key : 'deploy_step_failed', err.message);
  if (err instanceof GitHubError) {
    // A 404 while dispatching is the workflow (not the repository) missing on the default branch.
    const key = step === 'dispatching' && err.failure === 'not_found' ? 'workflow_dispatch_failed' : githubErrorKey(err, step === 'dispatching' ? 'workflow_dispatch_failed' : 'deploy_step_failed');
    return named(key, err.message);
  }
  return named('deploy_step_failed', `an unexpected error (${err instanceof Error ? err.message : String(err)}); deploy again, and report it if it repeats.`);
}
