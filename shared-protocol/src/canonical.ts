import canonicalizeJson from 'canonicalize';

// canonicalize 5 calls String.prototype.isWellFormed (ES2024: Node 20 and later) on every
// string and key. The agent still runs on the distribution's Node 18.19 on VMs
// (scripts/install-agent.sh: Debian 12, Ubuntu 24.04) until it ships as one executable with
// its own Node 24 (issue 14, point 3); there the method is missing and every signature would
// fail. So where it is missing, and only there, it gets the specification's behaviour: false
// when the string holds a lone surrogate (in a `u` regex a valid pair is one code point, never
// a Cs one). Remove once no agent runs on Node 18.
if (typeof String.prototype.isWellFormed !== 'function') {
  Object.defineProperty(String.prototype, 'isWellFormed', {
    value: function isWellFormed(this: unknown): boolean {
      return !/\p{Cs}/u.test(String(this));
    },
    writable: true,
    configurable: true,
    enumerable: false,
  });
}

/**
 * RFC 8785 (JSON Canonicalization Scheme) text of a JSON value: sorted keys by
 * UTF-16 code units, ECMAScript number formatting, no insignificant white space.
 * Throws TypeError for values JSON cannot carry (undefined, functions,
 * non-finite numbers, bigint) and for strings or keys with a lone surrogate
 * (not Unicode text; RFC 8785 section 3.2.2.2 requires refusing them), so
 * nothing ambiguous is ever signed.
 */
export function canonicalJson(value: unknown): string {
  assertJsonValue(value, '$');
  const text = canonicalizeJson(value);
  if (text === undefined) throw new TypeError('value has no JSON form');
  return text;
}

function assertJsonValue(value: unknown, path: string): void {
  if (value === null || typeof value === 'boolean') return;
  if (typeof value === 'string') {
    if (!value.isWellFormed()) throw new TypeError(`${path}: lone surrogate`);
    return;
  }
  if (typeof value === 'number') {
    if (!Number.isFinite(value)) throw new TypeError(`${path}: non-finite number`);
    return;
  }
  if (Array.isArray(value)) {
    value.forEach((item, i) => assertJsonValue(item, `${path}[${i}]`));
    return;
  }
  if (typeof value === 'object') {
    const proto = Object.getPrototypeOf(value) as unknown;
    if (proto !== Object.prototype && proto !== null) throw new TypeError(`${path}: not a plain object`);
    for (const [k, v] of Object.entries(value)) {
      if (!k.isWellFormed()) throw new TypeError(`${path}: key with a lone surrogate`);
      assertJsonValue(v, `${path}.${k}`);
    }
    return;
  }
  throw new TypeError(`${path}: ${typeof value} has no JSON form`);
}
