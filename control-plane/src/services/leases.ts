/**
 * One process's leases on one kind of long work (deploys, agent rollouts): which rows it
 * drives, at which generation. Every `checkMs` it renews them all with one UPDATE (a row
 * missing from the answer that another process holds now: its driver is told to stop;
 * one that ended meanwhile is only let go)
 * and claims rows whose lease ran out, handing each to `adopt`. At a clean stop it
 * releases what it holds, so another process claims that work at once instead of after
 * the lease runs out. See db/leases.ts for the columns and the fencing.
 */
import type { AppContext } from '../app.ts';
import { claimLeases, leaseStates, releaseLeases, renewLeases } from '../db/leases.ts';
import type { Claimed, Lease, LeaseKind, LeaseTerms } from '../db/leases.ts';

export interface LeaseHandlers {
  /** Starts driving a claimed row (after a crash, an expiry or a release elsewhere). */
  adopt(claimed: Claimed): Promise<void>;
  /** This process no longer holds the row: its driver stops before its next write. */
  lost(id: string): void;
}

export class LeaseKeeper {
  readonly #ctx: AppContext;
  readonly #kind: LeaseKind;
  readonly #handlers: LeaseHandlers;
  readonly #held = new Map<string, number>();
  #timer: NodeJS.Timeout | undefined;
  #ticking: Promise<void> | undefined;
  #closed = false;

  constructor(ctx: AppContext, kind: LeaseKind, handlers: LeaseHandlers) {
    this.#ctx = ctx;
    this.#kind = kind;
    this.#handlers = handlers;
  }

  /** The terms of a lease taken now by this process. */
  terms(): LeaseTerms {
    return { nodeId: this.#ctx.nodeId, now: Date.now(), durationMs: this.#ctx.config.leases.durationMs };
  }

  /** A row this process made with a lease of its own (generation 1) and drives from now. */
  hold(lease: Lease): void {
    this.#held.set(lease.id, lease.generation);
  }

  /** The row is no longer driven here (it ended, or its lease was lost). */
  drop(id: string): void {
    this.#held.delete(id);
  }

  holds(id: string): boolean {
    return this.#held.has(id);
  }

  /**
   * Claims what is free now and adopts it; then keeps renewing and claiming every
   * `checkMs`. `all` (SQLite, the only process) takes every running row at start.
   */
  async start(opts: { all?: boolean } = {}): Promise<number> {
    const n = await this.#claim(opts.all === true);
    if (!this.#closed && this.#timer === undefined) {
      this.#timer = setInterval(() => void this.tick(), this.#ctx.config.leases.checkMs);
      this.#timer.unref();
    }
    return n;
  }

  /** One renewal and one claim (the timer's work; tests may call it to avoid waiting). */
  async tick(): Promise<void> {
    if (this.#closed || this.#ticking) return this.#ticking;
    this.#ticking = (async () => {
      try {
        await this.#renew();
        if (!this.#closed) await this.#claim(false);
      } catch (err) {
        this.#ctx.logger.error({ err, kind: this.#kind }, 'leases: renewing or claiming failed; trying again at the next check');
      }
    })().finally(() => (this.#ticking = undefined));
    return this.#ticking;
  }

  async #renew(): Promise<void> {
    const ids = [...this.#held.keys()];
    if (ids.length === 0) return;
    const kept = await renewLeases(this.#ctx.db, this.#kind, this.terms(), ids);
    const missing = ids.filter((id) => !kept.has(id));
    if (missing.length === 0) return;
    // Not renewed: it ended since (its driver is finishing and drops it), or another
    // process claimed it (its driver must stop). Only the second is a loss.
    const states = await leaseStates(this.#ctx.db, this.#kind, missing);
    for (const id of missing) {
      if (!this.#held.has(id)) continue;
      this.#held.delete(id);
      const state = states.get(id);
      if (state !== undefined && !state.running && state.owner === this.#ctx.nodeId) continue;
      this.#handlers.lost(id);
    }
  }

  async #claim(all: boolean): Promise<number> {
    const claimed = await claimLeases(this.#ctx.db, this.#kind, this.terms(), { exclude: [...this.#held.keys()], all });
    for (const c of claimed) {
      this.#held.set(c.id, c.generation);
      if (this.#closed) break;
      await this.#handlers.adopt(c);
    }
    return claimed.length;
  }

  /** No more renewals or claims (a claim under way ends first). */
  async stop(): Promise<void> {
    this.#closed = true;
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = undefined;
    await this.#ticking;
  }

  /** Stops, then releases every lease held: call once the drivers stopped writing. */
  async close(): Promise<void> {
    await this.stop();
    const ids = [...this.#held.keys()];
    this.#held.clear();
    await releaseLeases(this.#ctx.db, this.#kind, this.#ctx.nodeId, ids).catch((err: unknown) =>
      this.#ctx.logger.error({ err, kind: this.#kind }, 'leases: not released; other processes claim them when they run out'),
    );
  }
}
