/**
 * One deploy's record as its runner moves it: the `deploys` row, its `deploy_steps`,
 * an audit row per transition and a wake-up for long-polls. Every write goes through
 * here, so what a restarted process reads is exactly what happened.
 */
import { errorStatus } from '@vmkit/protocol';
import type { ErrorKey } from '@vmkit/protocol';
import type { Db } from '../../db/index.ts';
import { insertAudit } from '../../db/audit.ts';
import { fencedDeployWrite, listDeploySteps, updateDeploy, upsertDeployStep } from '../../db/deploys.ts';
import type { DeployPatch, DeployRow, DeployStepRow, DeployStepState } from '../../db/deploys.ts';
import type { Lease } from '../../db/leases.ts';
import type { DeployEvents } from './events.ts';
import { DEPLOY_STEPS } from './timings.ts';
import type { DeployStepName } from './timings.ts';

/** Audit rows of background deploy work carry this channel (requests carry rest or mcp). */
export const DEPLOY_AUDIT_CHANNEL = 'deploy';

export interface RecordDeps {
  db: Db;
  events: DeployEvents;
  now(): number;
}

type StepValues = Omit<DeployStepRow, 'id' | 'deployId' | 'seq' | 'state'> & { state: DeployStepState };

export class DeployRecord {
  row: DeployRow;
  /**
   * The lease this process drives the deploy under: every write is then fenced by it
   * (db/deploys.ts fencedDeployWrite) and throws LeaseLost, writing nothing, once
   * another process claimed the deploy. Null for a deploy nobody leases (first phase).
   */
  readonly lease: Lease | null;
  readonly #d: RecordDeps;
  readonly #steps = new Map<DeployStepName, StepValues>();

  private constructor(deps: RecordDeps, row: DeployRow, steps: DeployStepRow[], lease: Lease | null) {
    this.#d = deps;
    this.row = row;
    this.lease = lease;
    for (const s of steps) this.#steps.set(s.name as DeployStepName, { ...s, state: s.state as DeployStepState });
  }

  static async load(deps: RecordDeps, row: DeployRow, lease: Lease | null = null): Promise<DeployRecord> {
    return new DeployRecord(deps, row, await listDeploySteps(deps.db, row.id), lease);
  }

  stepState(name: DeployStepName): DeployStepState | undefined {
    return this.#steps.get(name)?.state;
  }

  /** Strictly increasing per deploy, so `?after=<updated_at>` never misses a change made in the same millisecond. */
  #tick(): number {
    const at = Math.max(this.#d.now(), this.row.updatedAt + 1);
    return at;
  }

  async patch(patch: DeployPatch): Promise<void> {
    await this.#write(patch);
  }

  /** The deploy row's patch and, with `step`, that step's row: one fenced transaction when leased. */
  async #write(patch: DeployPatch, step?: { name: DeployStepName; values: StepValues }): Promise<void> {
    const at = this.#tick();
    const stepRow = step ? { seq: DEPLOY_STEPS.indexOf(step.name), values: step.values } : undefined;
    if (this.lease) {
      await fencedDeployWrite(this.#d.db, this.lease, patch, at, stepRow);
    } else {
      if (stepRow) await upsertDeployStep(this.#d.db, this.row.id, stepRow.seq, stepRow.values);
      await updateDeploy(this.#d.db, this.row.id, patch, at);
    }
    if (step) this.#steps.set(step.name, step.values);
    this.row = { ...this.row, ...patch, updatedAt: at };
    this.#d.events.changed(this.row.id);
  }

  #stepValues(name: DeployStepName, values: Partial<StepValues> & { state: DeployStepState }): StepValues {
    const prev = this.#steps.get(name);
    const next: StepValues = {
      name,
      state: values.state,
      detail: values.detail !== undefined ? values.detail : (prev?.detail ?? null),
      errorKey: values.errorKey !== undefined ? values.errorKey : null,
      errorMessage: values.errorMessage !== undefined ? values.errorMessage : null,
      attempts: values.attempts ?? prev?.attempts ?? 0,
      startedAt: values.startedAt !== undefined ? values.startedAt : (prev?.startedAt ?? null),
      finishedAt: values.finishedAt !== undefined ? values.finishedAt : null,
    };
    return next;
  }

  /** The step (re-)starts: attempts go up by one, a resumed step counts again. */
  async stepStarted(name: DeployStepName): Promise<void> {
    const at = this.#tick();
    const attempts = (this.#steps.get(name)?.attempts ?? 0) + 1;
    await this.#write({ currentStep: name }, { name, values: this.#stepValues(name, { state: 'running', attempts, startedAt: at, finishedAt: null }) });
    await this.audit(`deploys.step.${name}.running`, 200, null, { attempt: String(attempts) });
  }

  async stepEnded(name: DeployStepName, state: 'succeeded' | 'skipped', detail: Record<string, unknown> | null): Promise<void> {
    const at = this.#tick();
    await this.#write({}, { name, values: this.#stepValues(name, { state, detail, finishedAt: at }) });
    await this.audit(`deploys.step.${name}.${state}`, 200, null);
  }

  async stepFailed(name: DeployStepName, key: ErrorKey, message: string, detail?: Record<string, unknown>): Promise<void> {
    const at = this.#tick();
    await this.#write({}, { name, values: this.#stepValues(name, { state: 'failed', errorKey: key, errorMessage: message, finishedAt: at, ...(detail ? { detail } : {}) }) });
    await this.audit(`deploys.step.${name}.failed`, errorStatus(key), key);
  }

  /** The deploy ends failed at `step`, the step's key and message carried on the deploy. */
  async fail(step: DeployStepName, key: ErrorKey, message: string, detail?: Record<string, unknown>): Promise<void> {
    await this.stepFailed(step, key, message, detail);
    await this.patch({ status: 'failed', currentStep: 'failed', failedStep: step, errorKey: key, errorMessage: message });
    await this.audit('deploys.failed', errorStatus(key), key);
  }

  async succeed(patch: DeployPatch): Promise<void> {
    await this.patch({ ...patch, status: 'succeeded', currentStep: 'succeeded' });
    await this.audit('deploys.succeeded', 200, null);
  }

  async audit(action: string, status: number, errorKey: ErrorKey | null, extra: Record<string, string> = {}): Promise<void> {
    const d = this.row;
    await insertAudit(this.#d.db, {
      at: this.#d.now(),
      workspaceId: d.workspaceId,
      keyId: d.keyId,
      channel: DEPLOY_AUDIT_CHANNEL,
      tool: null,
      action,
      method: null,
      route: null,
      targetIds: { id: d.id, environment_id: d.environmentId, ...(d.instanceId ? { instance_id: d.instanceId } : {}), ...extra },
      status,
      errorKey,
      requestId: null,
      clientAddress: null,
    });
  }
}
