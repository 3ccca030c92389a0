/**
 * Bounds handshakes per second. A refused caller is handed its own future slot
 * (`retryAfterMs`): refusals are queued one interval (1/rate) apart, so callers told
 * to come back return at the pace the bucket refills instead of all at once, and a
 * control-plane restart with thousands of agents dialling becomes a paced queue.
 */
export class TokenBucket {
  readonly #rate: number;
  readonly #burst: number;
  #tokens: number;
  #last: number;
  #nextSlot = 0;
  readonly #now: () => number;

  constructor(opts: { perSecond: number; burst?: number; now?: () => number }) {
    if (!(opts.perSecond > 0)) throw new RangeError('perSecond must be positive');
    this.#rate = opts.perSecond;
    this.#burst = Math.max(1, opts.burst ?? opts.perSecond);
    this.#tokens = this.#burst;
    this.#now = opts.now ?? Date.now;
    this.#last = this.#now();
  }

  #refill(): number {
    const now = this.#now();
    this.#tokens = Math.min(this.#burst, this.#tokens + ((now - this.#last) / 1000) * this.#rate);
    this.#last = now;
    return now;
  }

  /** Takes a token if there is one. */
  take(): boolean {
    this.#refill();
    if (this.#tokens >= 1) {
      this.#tokens -= 1;
      return true;
    }
    return false;
  }

  /** Milliseconds until the bucket holds `count` tokens (0 when it already does), if nobody else takes one. */
  msUntil(count: number): number {
    this.#refill();
    return Math.max(0, Math.ceil(((count - this.#tokens) / this.#rate) * 1000));
  }

  /**
   * For a refused caller: the wait until its slot, at least 250 ms (and at least
   * `notBeforeMs`: the tokens already promised to callers held in line), each refusal
   * one interval after the previous one, plus up to one interval of jitter. At most 10 min.
   */
  retryAfterMs(random: () => number = Math.random, notBeforeMs = 0): number {
    const now = this.#now();
    const interval = 1000 / this.#rate;
    this.#nextSlot = Math.max(this.#nextSlot + interval, now + Math.max(250, interval, notBeforeMs));
    return Math.min(600_000, Math.ceil(this.#nextSlot - now + random() * interval));
  }
}
