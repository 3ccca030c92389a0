import { EventEmitter } from 'node:events';

/**
 * Tells waiting long-polls that a deploy moved (a step started or ended, the deploy
 * finished), inside this process: `GET /api/deploys/{id}?wait_ms=` waits on this
 * instead of reading the database in a loop.
 */
export class DeployEvents {
  readonly #emitter = new EventEmitter();

  constructor() {
    // One listener per waiting request; many may wait on one deploy.
    this.#emitter.setMaxListeners(0);
  }

  changed(deployId: string): void {
    this.#emitter.emit(deployId);
  }

  /** Resolves at the next change of the deploy, after `ms`, or when `signal` aborts. */
  next(deployId: string, ms: number, signal?: AbortSignal): Promise<void> {
    if (ms <= 0 || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#emitter.off(deployId, done);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#emitter.on(deployId, done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }
}
