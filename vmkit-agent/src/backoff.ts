/**
 * Exponential backoff with full jitter (delay drawn uniformly from [0, min(cap,
 * base * 2^attempt)]): after a control-plane restart thousands of agents spread
 * their reconnects over the whole window instead of arriving in waves.
 */
export interface BackoffOptions {
  baseMs: number;
  capMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 500, capMs: 60_000 };

export function backoffCeiling(attempt: number, opts: BackoffOptions): number {
  // 2^attempt overflows to Infinity long after the cap applies; clamp the exponent anyway.
  return Math.min(opts.capMs, opts.baseMs * 2 ** Math.min(attempt, 30));
}

export function fullJitterDelay(attempt: number, opts: BackoffOptions, random: () => number = Math.random): number {
  return Math.floor(random() * backoffCeiling(attempt, opts));
}
