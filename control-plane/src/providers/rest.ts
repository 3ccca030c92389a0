/**
 * The JSON-over-HTTPS call the cloud providers (Hetzner, Cloudflare) share: one base
 * URL (configurable, so tests and proxies can stand in), fixed headers, a timeout, and
 * 429 handled the way the providers document it: wait until the advertised reset, then
 * retry, a bounded number of times. A 429 is safe to retry for any method: the request
 * was refused before it did anything.
 */

export interface RestResponse<T = unknown> {
  status: number;
  headers: Headers;
  body: T;
}

export interface RestClientOptions {
  /** For error messages: "Hetzner", "Cloudflare". */
  provider: string;
  baseUrl: string;
  headers: Readonly<Record<string, string>>;
  /** Per HTTP request; default 30 s. */
  timeoutMs?: number;
  /** How many 429s in a row are waited out; default 3. */
  maxRetries?: number;
  /**
   * Longest wait honoured for one 429; default 60 s. A reset farther away is handed back
   * (RateLimitedError) so the caller can reschedule instead of holding a request open.
   */
  maxWaitMs?: number;
  sleep?: (ms: number) => Promise<void>;
  now?: () => number;
}

/** The provider's rate limit outlasted the retries; `resetAt` says when it lifts. */
export class RateLimitedError extends Error {
  override name = 'RateLimitedError';
  readonly resetAt: Date;
  constructor(
    message: string,
    resetAt: Date,
  ) {
    super(message);
    this.resetAt = resetAt;
  }
}

/** The provider could not be reached, timed out, or answered something that is not JSON. */
export class UnreachableError extends Error {
  override name = 'UnreachableError';
}

/** Fallback wait when a 429 names no reset time. */
const DEFAULT_WAIT_MS = 5_000;

export class RestClient {
  readonly baseUrl: string;
  readonly #opts: Required<Omit<RestClientOptions, 'baseUrl'>>;

  constructor(opts: RestClientOptions) {
    const base = new URL(opts.baseUrl);
    if (base.protocol !== 'https:' && base.protocol !== 'http:') throw new Error(`the ${opts.provider} API base URL must be http(s)`);
    this.baseUrl = base.toString().replace(/\/+$/, '');
    this.#opts = {
      provider: opts.provider,
      headers: opts.headers,
      timeoutMs: opts.timeoutMs ?? 30_000,
      maxRetries: opts.maxRetries ?? 3,
      maxWaitMs: opts.maxWaitMs ?? 60_000,
      sleep: opts.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms))),
      now: opts.now ?? Date.now,
    };
  }

  /** Any answer but 429 comes back as is; the caller judges the status. */
  async request<T>(method: 'GET' | 'POST' | 'PATCH' | 'PUT' | 'DELETE', path: string, body?: unknown): Promise<RestResponse<T>> {
    const { provider, maxRetries, maxWaitMs, sleep, now } = this.#opts;
    for (let attempt = 0; ; attempt++) {
      const res = await this.#once<T>(method, path, body);
      if (res.status !== 429) return res;
      const resetAtMs = rateLimitResetAt(res.headers, now()) ?? now() + DEFAULT_WAIT_MS;
      const waitMs = Math.max(0, resetAtMs - now());
      if (attempt >= maxRetries || waitMs > maxWaitMs) {
        throw new RateLimitedError(
          `${provider}'s API rate limit is exhausted (${method} ${path}); it lifts at ${new Date(resetAtMs).toISOString()}.`,
          new Date(resetAtMs),
        );
      }
      await sleep(waitMs);
    }
  }

  async #once<T>(method: string, path: string, body: unknown): Promise<RestResponse<T>> {
    const { provider, headers, timeoutMs } = this.#opts;
    const url = `${this.baseUrl}${path}`;
    let res: Response;
    try {
      res = await fetch(url, {
        method,
        headers: { accept: 'application/json', ...headers, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        body: body === undefined ? null : JSON.stringify(body),
        // Credentials never follow a redirect to another host.
        redirect: 'manual',
        signal: AbortSignal.timeout(timeoutMs),
      });
    } catch (err) {
      throw new UnreachableError(`${provider} could not be reached at ${new URL(url).origin}: ${(err as Error).message}`);
    }
    const text = await res.text();
    let parsed: unknown = null;
    if (text !== '') {
      try {
        parsed = JSON.parse(text) as unknown;
      } catch {
        if (res.ok) throw new UnreachableError(`${provider} answered ${method} ${path} with something other than JSON.`);
        parsed = { message: text.slice(0, 200) };
      }
    }
    return { status: res.status, headers: res.headers, body: parsed as T };
  }
}

/**
 * When a 429 lifts, in epoch ms: `Retry-After` (seconds or an HTTP date), else
 * `RateLimit-Reset`, which Hetzner sends as a UNIX timestamp and the IETF draft as
 * seconds from now (a value past 1e9 can only be a timestamp). null when neither says.
 */
export function rateLimitResetAt(headers: Headers, nowMs: number): number | null {
  const retryAfter = headers.get('retry-after');
  if (retryAfter !== null && retryAfter.trim() !== '') {
    const secs = Number(retryAfter);
    if (Number.isFinite(secs) && secs >= 0) return nowMs + secs * 1000;
    const date = Date.parse(retryAfter);
    if (!Number.isNaN(date)) return date;
  }
  const reset = Number(headers.get('ratelimit-reset') ?? NaN);
  if (Number.isFinite(reset) && reset >= 0) return reset > 1e9 ? reset * 1000 : nowMs + reset * 1000;
  return null;
}
