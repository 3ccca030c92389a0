import { randomBytes } from 'node:crypto';
import { z } from 'zod';

/**
 * Prefixed, lowercase ULIDs (`inst_01jx4n9abc...`): 48-bit millisecond time then
 * 80 random bits in Crockford base32, so ids sort by creation time as strings.
 */
export const ID_PREFIXES = {
  workspace: 'ws',
  apiKey: 'key',
  repo: 'repo',
  environment: 'env',
  instance: 'inst',
  agent: 'agt',
  enrollmentToken: 'enr',
  command: 'cmd',
  scan: 'sc',
  deploy: 'dep',
  deployStep: 'step',
  shellSession: 'shs',
  workspaceProvider: 'wsp',
  dnsRecord: 'dns',
  sshKey: 'sshk',
  audit: 'aud',
  agentRollout: 'rol',
  rolloutTarget: 'rolt',
} as const;

export type IdKind = keyof typeof ID_PREFIXES;
export type IdPrefix = (typeof ID_PREFIXES)[IdKind];

const ALPHABET = '0123456789abcdefghjkmnpqrstvwxyz';
const TIME_CHARS = 10;
const RANDOM_CHARS = 16;
const MAX_TIME = 2 ** 48 - 1;

function encodeTime(ms: number): string {
  let out = '';
  let rest = ms;
  for (let i = 0; i < TIME_CHARS; i++) {
    out = ALPHABET.charAt(rest % 32) + out;
    rest = Math.floor(rest / 32);
  }
  return out;
}

function encodeRandom(bytes: Uint8Array): string {
  // 80 bits -> 16 chars of 5 bits each.
  let out = '';
  let acc = 0;
  let bits = 0;
  for (const byte of bytes) {
    acc = (acc << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += ALPHABET.charAt((acc >> bits) & 31);
    }
    acc &= (1 << bits) - 1;
  }
  return out;
}

/** Adds one to a base32 string, for monotonic ids within one millisecond. */
function incrementBase32(s: string): string | undefined {
  const chars = s.split('');
  for (let i = chars.length - 1; i >= 0; i--) {
    const v = ALPHABET.indexOf(chars[i] ?? '');
    if (v < 31) {
      chars[i] = ALPHABET.charAt(v + 1);
      return chars.join('');
    }
    chars[i] = ALPHABET.charAt(0);
  }
  return undefined;
}

/**
 * A ULID source that is monotonic within itself: ids made in the same millisecond,
 * or after the clock stepped back, still sort after the previous one.
 */
export function monotonicUlid(): (now?: number) => string {
  let lastTime = -1;
  let lastRandom = '';
  return (now: number = Date.now()): string => {
    if (!Number.isInteger(now) || now < 0 || now > MAX_TIME) {
      throw new RangeError(`ulid time out of range: ${now}`);
    }
    if (now <= lastTime) {
      const next = incrementBase32(lastRandom);
      if (next !== undefined) {
        lastRandom = next;
        return encodeTime(lastTime) + lastRandom;
      }
      // 2^80 ids in one millisecond: move to the next one rather than repeat.
      lastTime += 1;
    } else {
      lastTime = now;
    }
    lastRandom = encodeRandom(randomBytes(10));
    return encodeTime(lastTime) + lastRandom;
  };
}

/** A new lowercase ULID, monotonic within this process. */
export const ulid = monotonicUlid();

/** Milliseconds since the epoch encoded in a ULID (or a prefixed id). */
export function ulidTime(id: string): number {
  const body = id.slice(id.lastIndexOf('_') + 1, id.lastIndexOf('_') + 1 + TIME_CHARS);
  let ms = 0;
  for (const ch of body) ms = ms * 32 + ALPHABET.indexOf(ch);
  return ms;
}

export function newId<K extends IdKind>(kind: K): `${(typeof ID_PREFIXES)[K]}_${string}` {
  return `${ID_PREFIXES[kind]}_${ulid()}`;
}

const ULID_BODY = `[0-7][${ALPHABET}]{${TIME_CHARS + RANDOM_CHARS - 1}}`;

export function idPattern(kind: IdKind): RegExp {
  return new RegExp(`^${ID_PREFIXES[kind]}_${ULID_BODY}$`);
}

export function isId(kind: IdKind, value: unknown): value is string {
  return typeof value === 'string' && idPattern(kind).test(value);
}

/** zod schema for one kind of id, e.g. `idSchema('instance')`. */
export function idSchema(kind: IdKind) {
  return z.string().regex(idPattern(kind), `must be a ${ID_PREFIXES[kind]}_ id`);
}
