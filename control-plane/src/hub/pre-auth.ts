import type { IncomingMessage } from 'node:http';
import { isIPv4, isIPv6 } from 'node:net';
import proxyAddr from '@fastify/proxy-addr';

/**
 * The hub's pre-authentication stage: what a peer may cost before it has proved to
 * be an enrolled agent. Every upgrade to /agent/v1/connect takes one token of its
 * address's bucket; an address without a token is answered 429 before a WebSocket
 * exists. Refusals here hand out no retry slot and touch nothing another address
 * (or a verified agent) depends on.
 */

/** The client address of an upgrade request, read as Fastify reads `request.ip` under the same trustProxy setting. */
export function clientAddressResolver(trustProxy: boolean | string): (req: IncomingMessage) => string {
  const direct = (req: IncomingMessage) => req.socket.remoteAddress ?? 'unknown';
  if (trustProxy === false) return direct;
  const trust =
    trustProxy === true
      ? () => true
      : proxyAddr.compile(
          trustProxy
            .split(',')
            .map((s) => s.trim())
            .filter((s) => s !== ''),
        );
  return (req) => (req.socket.remoteAddress === undefined ? 'unknown' : proxyAddr(req, trust));
}

/**
 * The key an address is limited under: IPv4 as is (IPv4-mapped IPv6 unwrapped),
 * IPv6 by its /64, since one host commonly holds a whole /64.
 */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1] !== undefined) return mapped[1];
  if (isIPv4(address) || !isIPv6(address)) return address;
  const [head = '', tail = ''] = address.split('%')[0]?.split('::') ?? [];
  const left = head === '' ? [] : head.split(':');
  const right = tail === '' ? [] : tail.split(':');
  const groups = address.includes('::') ? [...left, ...Array<string>(8 - left.length - right.length).fill('0'), ...right] : left;
  return `${groups
    .slice(0, 4)
    .map((g) => Number.parseInt(g, 16).toString(16))
    .join(':')}::/64`;
}

export interface PreAuthVerdict {
  ok: boolean;
  /** For a refusal: when this address has a token again (its own refill, no shared queue). */
  retryAfterMs: number;
}

interface Bucket {
  tokens: number;
  last: number;
}

/**
 * One token bucket per address key. Memory is bounded: buckets that refilled are
 * forgotten by `prune()`, and past `maxAddresses` the oldest entries go first.
 */
export class PerAddressLimiter {
  readonly #rate: number;
  readonly #burst: number;
  readonly #maxAddresses: number;
  readonly #now: () => number;
  readonly #buckets = new Map<string, Bucket>();

  constructor(opts: { perSecond: number; burst?: number; maxAddresses?: number; now?: () => number }) {
    if (!(opts.perSecond > 0)) throw new RangeError('perSecond must be positive');
    this.#rate = opts.perSecond;
    this.#burst = Math.max(1, opts.burst ?? opts.perSecond * 2);
    this.#maxAddresses = opts.maxAddresses ?? 100_000;
    this.#now = opts.now ?? Date.now;
  }

  get size(): number {
    return this.#buckets.size;
  }

  take(address: string): PreAuthVerdict {
    const key = addressKey(address);
    const now = this.#now();
    let b = this.#buckets.get(key);
    if (b) {
      b.tokens = Math.min(this.#burst, b.tokens + ((now - b.last) / 1000) * this.#rate);
      b.last = now;
    } else {
      if (this.#buckets.size >= this.#maxAddresses) this.#evictOldest();
      b = { tokens: this.#burst, last: now };
      this.#buckets.set(key, b);
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return { ok: true, retryAfterMs: 0 };
    }
    return { ok: false, retryAfterMs: Math.max(1, Math.ceil(((1 - b.tokens) / this.#rate) * 1000)) };
  }

  /** Forgets addresses whose bucket is full again: they are as if never seen. */
  prune(): void {
    const now = this.#now();
    for (const [key, b] of this.#buckets) {
      if (b.tokens + ((now - b.last) / 1000) * this.#rate >= this.#burst) this.#buckets.delete(key);
    }
  }

  #evictOldest(): void {
    // Map keeps insertion order: the first entries are the least recently created.
    const drop = Math.max(1, Math.floor(this.#maxAddresses / 10));
    let n = 0;
    for (const key of this.#buckets.keys()) {
      this.#buckets.delete(key);
      if (++n >= drop) break;
    }
  }
}
