/**
 * Tells waiting long-polls that a deploy moved (a step started or ended, the deploy
 * finished): `GET /api/deploys/{id}?wait_ms=` waits on this instead of reading the
 * database in a loop.
 *
 * `changed` is called by the process driving the deploy (its DeployRecord, after each
 * write); with several processes on PostgreSQL it is also handed to `relay`, which tells
 * the others (cluster-events.ts), whose `heard` wakes their own waiters. A waiter re-reads
 * the row when woken, so a spurious wake-up only costs a read: `wakeAll` (after the
 * LISTEN connection was lost and is back) wakes every one of them.
 */

/** One waiter's view of a deploy's changes: a change seen between two `next` calls is not lost. */
export class DeployWatch {
  #changed = false;
  #wake: (() => void) | undefined;
  readonly #close: () => void;

  constructor(close: () => void) {
    this.#close = close;
  }

  /** A change was seen that no `next` returned for yet. */
  get pending(): boolean {
    return this.#changed;
  }

  /** @internal the deploy changed (or may have) */
  fire(): void {
    this.#changed = true;
    this.#wake?.();
  }

  /** Resolves at once when the deploy changed since the watch began or the last `next`, else at the next change, after `ms`, or when `signal` aborts. */
  next(ms: number, signal?: AbortSignal): Promise<void> {
    if (this.#changed || ms <= 0 || signal?.aborted) {
      this.#changed = false;
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        this.#wake = undefined;
        this.#changed = false;
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, ms);
      this.#wake = done;
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  close(): void {
    this.#wake?.();
    this.#close();
  }
}

export class DeployEvents {
  // Many may wait on one deploy (one watch per waiting request).
  readonly #watches = new Map<string, Set<DeployWatch>>();
  #relay: ((deployId: string) => void) | undefined;

  /** Where this process's own changes go besides its waiters (other processes). */
  relayTo(relay: (deployId: string) => void): void {
    this.#relay = relay;
  }

  /** This process changed the deploy: its waiters wake, and the other processes' through the relay. */
  changed(deployId: string): void {
    this.heard(deployId);
    this.#relay?.(deployId);
  }

  /** Another process changed the deploy: this process's waiters wake. */
  heard(deployId: string): void {
    for (const w of this.#watches.get(deployId) ?? []) w.fire();
  }

  /** Every waiter wakes once (changes may have been missed): each re-reads its deploy and waits again. */
  wakeAll(): void {
    for (const set of this.#watches.values()) for (const w of set) w.fire();
  }

  /** Waiters on the deploy right now (tests wait for a long-poll to be waiting). */
  waiting(deployId: string): number {
    return this.#watches.get(deployId)?.size ?? 0;
  }

  /** Begins watching the deploy: changes from now on are seen by the watch's `next`; `close` it when done. */
  watch(deployId: string): DeployWatch {
    let set = this.#watches.get(deployId);
    if (!set) this.#watches.set(deployId, (set = new Set()));
    const watches = set;
    const w = new DeployWatch(() => {
      watches.delete(w);
      if (watches.size === 0 && this.#watches.get(deployId) === watches) this.#watches.delete(deployId);
    });
    watches.add(w);
    return w;
  }

  /** Resolves at the next change of the deploy, after `ms`, or when `signal` aborts. */
  async next(deployId: string, ms: number, signal?: AbortSignal): Promise<void> {
    if (ms <= 0 || signal?.aborted) return;
    const w = this.watch(deployId);
    try {
      await w.next(ms, signal);
    } finally {
      w.close();
    }
  }
}
