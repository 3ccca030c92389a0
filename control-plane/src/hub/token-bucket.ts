/**
 * Bounds handshakes per second. A refused caller is told how long to wait, spread
 * over the backlog seen in the last second, so that a control-plane restart with
 * thousands of agents dialling at once turns into a paced queue, not a herd.
 */
export class TokenBucket {
  readonly #rate: number;
  readonly #burst: number;
  #tokens: number;
  #last: number;
  #refusedWindowStart = 0;
  #refusedInWindow = 0;
  readonly #now: () => number;

  constructor(opts: { perSecond: number; burst?: number; now?: () => number }) {
    if (!(opts.perSecond > 0)) throw new RangeError('perSecond must be positive');
    this.#rate = opts.perSecond;
    this.#burst = Math.max(1, opts.burst ?? opts.perSecond);
    this.#tokens = this.#burst;
    this.#now = opts.now ?? Date.now;
    this.#last = this.#now();
  }

  /** Takes a token if there is one. */
  take(): boolean {
    const now = this.#now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#last) / 1000) * this.#rate);
    this.#last = now;
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return true;
    }
    if (now - this.#refusedWindowStart > 1000) {
      this.#refusedWindowStart = now;
      this.#refusedInWindow = 0;
    }
    this.#refusedInWindow++;
    return false;
  }

  /**
   * How long a refused caller should wait: at least until a token is back, and
   * proportionally longer the larger the backlog, with jitter so callers told at the
   * same moment do not return at the same moment.
   */
  retryAfterMs(random: () => number = Math.random): number {
    const backlogMs = (Math.max(1, this.#refusedInWindow) / this.#rate) * 1000;
    const base = Math.max(1000 / this.#rate, backlogMs, 250);
    return Math.min(60_000, Math.ceil(base * (0.5 + random())));
  }
}
