/** The second phase's steps, in order; `scaffolding` (step 0) is the first phase's. */
export const DEPLOY_STEPS = ['scaffolding', 'provisioning', 'waiting_for_agent', 'hardening', 'dns', 'dispatching', 'running_workflow'] as const;
export type DeployStepName = (typeof DEPLOY_STEPS)[number];

export interface DeployTimings {
  /** How long each step may take before the deploy fails with `deploy_step_timed_out`. */
  stepTimeoutMs: Record<DeployStepName, number>;
  /** Between reads of a workflow run's status (each costs one of the installation's 5,000 requests an hour). */
  runPollMs: number;
  /** Between reads of the runs list while a dispatched run is looked for by name. */
  findRunPollMs: number;
}

/**
 * Defaults sized for real clouds: a Hetzner server takes a minute or two, its agent
 * installs Docker first (cloud-init), hardening reloads sshd, and a Kamal deploy
 * builds an image (GitHub stops a job at 6 h; most deploys take minutes).
 */
export const DEFAULT_DEPLOY_TIMINGS: DeployTimings = {
  stepTimeoutMs: {
    scaffolding: 2 * 60_000,
    provisioning: 10 * 60_000,
    waiting_for_agent: 15 * 60_000,
    hardening: 10 * 60_000,
    dns: 2 * 60_000,
    dispatching: 3 * 60_000,
    running_workflow: 60 * 60_000,
  },
  runPollMs: 5_000,
  findRunPollMs: 2_000,
};

declare module '../../app.ts' {
  interface AppContext {
    /** Step timeouts and poll intervals of deploys; tests make them short. */
    deployTimings?: Partial<Omit<DeployTimings, 'stepTimeoutMs'>> & { stepTimeoutMs?: Partial<DeployTimings['stepTimeoutMs']> };
  }
}

export function timingsOf(overrides: Partial<Omit<DeployTimings, 'stepTimeoutMs'>> & { stepTimeoutMs?: Partial<DeployTimings['stepTimeoutMs']> } = {}): DeployTimings {
  return {
    ...DEFAULT_DEPLOY_TIMINGS,
    ...overrides,
    stepTimeoutMs: { ...DEFAULT_DEPLOY_TIMINGS.stepTimeoutMs, ...overrides.stepTimeoutMs },
  };
}

/** What a person should do when `step` ran out of time; said in the failed deploy's message. */
export function timeoutAdvice(step: DeployStepName, seconds: number, runUrl: string | null): string {
  switch (step) {
    case 'scaffolding':
      return `GitHub did not answer the scaffolding calls within ${seconds} s; check GitHub's status and call deploy again.`;
    case 'provisioning':
      return `The compute provider did not create the VM within ${seconds} s; check the provider's console, then deploy again (a VM that finished meanwhile is reused).`;
    case 'waiting_for_agent':
      return `The VM's vmkit-agent did not connect within ${seconds} s; check that the VM reaches the control plane's public URL and read the instance's status_reason, then deploy again.`;
    case 'hardening':
      return `Hardening the VM did not finish within ${seconds} s; look at its harden command (GET /api/commands/{id}) or run harden_vm, then deploy again.`;
    case 'dns':
      return `The DNS provider did not answer within ${seconds} s; check its status and the workspace's DNS settings, then deploy again.`;
    case 'dispatching':
      return `GitHub did not start or list the deploy workflow run within ${seconds} s; look in the repository's Actions tab, then deploy again.`;
    case 'running_workflow':
      return `The deploy workflow run did not complete within ${seconds} s; it may still be running${runUrl ? ` at ${runUrl}` : ''}: follow it there, and deploy again if it failed.`;
  }
}
