import { z } from 'zod';

/**
 * What no name may hold, wherever names are accepted: C0/C1 controls and DEL (NUL,
 * terminal escape sequences, line breaks), the line and paragraph separators,
 * bidirectional controls (they reorder what a reader sees: U+202A-U+202E,
 * U+2066-U+2069, U+200E, U+200F, U+061C) and lone surrogates (not text at all;
 * storing one as UTF-8 silently turns it into U+FFFD).
 */
const UNSAFE_TEXT = /[\p{Cc}\u2028\u2029\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]|\p{Cs}/u;
const UNSAFE_TEXT_ALL = new RegExp(UNSAFE_TEXT.source, 'gu');

export const UNSAFE_TEXT_MESSAGE = 'must not contain control characters, bidirectional controls or lone surrogates';

/** True when `value` holds none of the characters above. */
export function isSafeText(value: string): boolean {
  return !UNSAFE_TEXT.test(value);
}

/** A zod string schema for a name field, refusing the characters above. */
export function safeName(): z.ZodString {
  return z.string().refine(isSafeText, UNSAFE_TEXT_MESSAGE);
}

/**
 * `value` with every character above written as an escape (`\x1b`, `\u202e`,
 * `\ud800`), so text from elsewhere can be printed to a terminal as it is.
 * Backslashes are doubled so an escape shown can be told from a literal one.
 */
export function escapeUnsafeText(value: string): string {
  if (!UNSAFE_TEXT.test(value) && !value.includes('\\')) return value;
  return value.replaceAll('\\', '\\\\').replace(UNSAFE_TEXT_ALL, (ch) => {
    const code = ch.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}

/**
 * JSON text (as JSON.stringify writes it) with the characters above written as
 * `\uXXXX`: JSON.stringify leaves DEL, C1 controls and bidi controls raw. The result
 * parses to the same value. Newlines stay: outside strings they are only layout
 * (inside strings JSON.stringify has escaped them already).
 */
export function escapeUnsafeJson(json: string): string {
  return json.replace(UNSAFE_TEXT_ALL, (ch) => (ch === '\n' ? ch : `\\u${ch.charCodeAt(0).toString(16).padStart(4, '0')}`));
}
