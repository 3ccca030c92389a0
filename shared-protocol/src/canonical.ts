import canonicalizeJson from 'canonicalize';

/**
 * RFC 8785 (JSON Canonicalization Scheme) text of a JSON value: sorted keys by
 * UTF-16 code units, ECMAScript number formatting, no insignificant white space.
 * Throws TypeError for values JSON cannot carry (undefined, functions,
 * non-finite numbers, bigint), so nothing ambiguous is ever signed.
 */
export function canonicalJson(value: unknown): string {
  assertJsonValue(value, '$');
  const text = canonicalizeJson(value);
  if (text === undefined) throw new TypeError('value has no JSON form');
  return text;
}

function assertJsonValue(value: unknown, path: string): void {
  if (value === null || typeof value === 'string' || typeof value === 'boolean') return;
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
    for (const [k, v] of Object.entries(value)) assertJsonValue(v, `${path}.${k}`);
    return;
  }
  throw new TypeError(`${path}: ${typeof value} has no JSON form`);
}
