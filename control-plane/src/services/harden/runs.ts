import type { ErrorKey } from '@vmkit/protocol';
import type { CommandProgress } from '../../hub/command-bus.ts';

export type RunState = 'running' | 'succeeded' | 'failed';

/** harden_vm's answer: the contract's two fields, then the detail as additions. */
export interface HardenAnswer {
  status: 'hardened' | 'already_hardened';
  instance_id: string;
  command_id: string;
  [detail: string]: unknown;
}

export interface RunError {
  error: ErrorKey;
  message: string;
  [extra: string]: unknown;
}

/**
 * What one process knows of a harden run while it is under way: its progress in
 * order, then its answer. Long-polls wait on it instead of re-reading the database.
 */
export class HardenRun {
  readonly progress: CommandProgress[] = [];
  state: RunState = 'running';
  answer: HardenAnswer | undefined;
  error: RunError | undefined;
  finishedAt: number | undefined;
  /** Called on every change (progress, end): HardenRuns sets it to tell its observers. */
  onChange: ((run: HardenRun) => void) | undefined;
  readonly #waiters = new Set<() => void>();

  readonly commandId: string;
  readonly workspaceId: string;
  readonly instanceId: string;
  constructor(
    commandId: string,
    workspaceId: string,
    instanceId: string,
  ) {
    this.commandId = commandId;
    this.workspaceId = workspaceId;
    this.instanceId = instanceId;
  }

  push(p: CommandProgress): void {
    this.progress.push(p);
    this.#wake();
  }

  succeed(answer: HardenAnswer, at: number): void {
    this.state = 'succeeded';
    this.answer = answer;
    this.finishedAt = at;
    this.#wake();
  }

  fail(error: RunError, at: number): void {
    this.state = 'failed';
    this.error = error;
    this.finishedAt = at;
    this.#wake();
  }

  /** Resolves when progress after `afterSeq` exists, the run ends, or `ms` pass. */
  async waitForNews(afterSeq: number, ms: number, signal?: AbortSignal): Promise<void> {
    if (this.state !== 'running' || this.progress.some((p) => p.seq > afterSeq) || ms <= 0) return;
    await new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.#waiters.delete(done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#waiters.add(done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
    this.onChange?.(this);
  }
}

/** Runs of this process, kept a while after they end so pollers can read the answer. */
export class HardenRuns {
  readonly #runs = new Map<string, HardenRun>();
  readonly #keepMs: number;
  readonly #observers = new Set<(run: HardenRun) => void>();

  constructor(keepMs = 15 * 60_000) {
    this.#keepMs = keepMs;
  }

  add(run: HardenRun): void {
    this.#runs.set(run.commandId, run);
    run.onChange = (r) => this.#tell(r);
    this.#tell(run);
  }

  /** Calls fn when a run starts and on each of its changes (the dashboard's live feed); returns the unsubscribe. */
  observe(fn: (run: HardenRun) => void): () => void {
    this.#observers.add(fn);
    return () => this.#observers.delete(fn);
  }

  #tell(run: HardenRun): void {
    for (const fn of this.#observers) {
      try {
        fn(run);
      } catch {
        // An observer's failure is not the run's: the run goes on for its pollers.
      }
    }
  }

  get(commandId: string, now: number): HardenRun | undefined {
    for (const [id, r] of this.#runs) {
      if (r.finishedAt !== undefined && now - r.finishedAt > this.#keepMs) this.#runs.delete(id);
    }
    return this.#runs.get(commandId);
  }

  /** The run under way for an instance, so two harden calls do not race. */
  activeFor(instanceId: string): HardenRun | undefined {
    for (const r of this.#runs.values()) if (r.instanceId === instanceId && r.state === 'running') return r;
    return undefined;
  }
}
