/**
 * Tells waiting long-polls that a row they follow moved (a deploy's step started or
 * ended, a rollout's agent got its outcome): `GET /api/deploys/{id}?wait_ms=` and
 * `GET /api/agents/updates/{id}?wait_ms=` wait on this instead of reading the database
 * in a loop. One `ChangeEvents` per kind of row, keyed by the row's id.
 *
 * `changed` is called by the process driving the row, after each write committed; with
 * several processes on PostgreSQL it is also handed to `relay`, which tells the others
 * (cluster.ts), whose `heard` wakes their own waiters. A waiter re-reads the row when
 * woken, so a spurious wake-up only costs a read: `wakeAll` (after the LISTEN connection
 * was lost and is back) wakes every one of them.
 */

/** One waiter's view of a row's changes: a change seen between two `next` calls is not lost. */
export class ChangeWatch {
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

  /** @internal the row changed (or may have) */
  fire(): void {
    this.#changed = true;
    this.#wake?.();
  }

  /** Resolves at once when the row changed since the watch began or the last `next`, else at the next change, after `ms`, or when `signal` aborts. */
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

export class ChangeEvents {
  // Many may wait on one row (one watch per waiting request).
  readonly #watches = new Map<string, Set<ChangeWatch>>();
  #relay: ((id: string) => void) | undefined;

  /** Where this process's own changes go besides its waiters (other processes). */
  relayTo(relay: (id: string) => void): void {
    this.#relay = relay;
  }

  /** This process changed the row: its waiters wake, and the other processes' through the relay. */
  changed(id: string): void {
    this.heard(id);
    this.#relay?.(id);
  }

  /** Another process changed the row: this process's waiters wake. */
  heard(id: string): void {
    for (const w of this.#watches.get(id) ?? []) w.fire();
  }

  /** Every waiter wakes once (changes may have been missed): each re-reads its row and waits again. */
  wakeAll(): void {
    for (const set of this.#watches.values()) for (const w of set) w.fire();
  }

  /** Waiters on the row right now (tests wait for a long-poll to be waiting). */
  waiting(id: string): number {
    return this.#watches.get(id)?.size ?? 0;
  }

  /** Begins watching the row: changes from now on are seen by the watch's `next`; `close` it when done. */
  watch(id: string): ChangeWatch {
    let set = this.#watches.get(id);
    if (!set) this.#watches.set(id, (set = new Set()));
    const watches = set;
    const w = new ChangeWatch(() => {
      watches.delete(w);
      if (watches.size === 0 && this.#watches.get(id) === watches) this.#watches.delete(id);
    });
    watches.add(w);
    return w;
  }

  /** Resolves at the next change of the row, after `ms`, or when `signal` aborts. */
  async next(id: string, ms: number, signal?: AbortSignal): Promise<void> {
    if (ms <= 0 || signal?.aborted) return;
    const w = this.watch(id);
    try {
      await w.next(ms, signal);
    } finally {
      w.close();
    }
  }

  /**
   * The row once `done` holds for it, or as it is when `waitMs` ran out or `signal`
   * aborted. `row` was read before the watch began, so it is read again at once: a change
   * in between is answered, not missed; so is one that comes while a wake-up re-reads.
   */
  async waitFor<R extends { id: string }>(
    row: R,
    reread: (row: R) => Promise<R>,
    done: (row: R) => boolean,
    waitMs: number,
    signal?: AbortSignal,
  ): Promise<R> {
    if (done(row) || waitMs <= 0 || signal?.aborted) return row;
    const deadline = Date.now() + waitMs;
    const watch = this.watch(row.id);
    try {
      let current = await reread(row);
      for (;;) {
        if (done(current)) return current;
        const left = deadline - Date.now();
        if (left <= 0 || signal?.aborted) return current;
        await watch.next(left, signal);
        current = await reread(current);
      }
    } finally {
      watch.close();
    }
  }
}
