import type { HardenEvent, HardenStep } from '../types.ts';

/** A harden run as it goes: each step the agent reports, then the answer or the error in words. */
export function HardenProgress({ run }: { run: HardenEvent }) {
  // One line per step, in the order steps began, showing its latest state.
  const byStep = new Map<string, HardenStep>();
  for (const p of run.progress) byStep.set(p.step, { ...p, message: p.message ?? byStep.get(p.step)?.message });
  const steps = [...byStep.values()];
  return (
    <div class="harden" aria-live="polite" data-command={run.command_id}>
      <ol class="steps">
        {steps.map((p) => (
          <li key={p.seq} class={`step step-${p.state}`}>
            <span class="step-name">{p.step.replaceAll('_', ' ')}</span>: <span class="step-state">{p.state}</span>
            {p.message ? <span class="muted"> — {p.message}</span> : null}
          </li>
        ))}
        {run.state === 'running' && run.progress.length === 0 ? <li class="muted">Waiting for the agent…</li> : null}
      </ol>
      {run.state === 'succeeded' && run.result?.status ? (
        <p class="ok harden-result" role="status">
          {run.result.status === 'hardened' ? 'hardened' : 'already hardened'}
        </p>
      ) : null}
      {run.state === 'failed' ? (
        <p class="error" role="alert">
          Hardening failed: {run.error?.message ?? 'no reason given'} {run.error?.error ? <code>({run.error.error})</code> : null}
        </p>
      ) : null}
    </div>
  );
}
