import t from 'tap';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { canonicalJson } from '@vmkit/protocol';

const ROOT = join(import.meta.dirname, '..', '..');

t.test('keys are sorted by UTF-16 code units (RFC 8785 section 3.2.3)', async (t) => {
  const input = { '\u20ac': 'Euro Sign', '\r': 'Carriage Return', '\ufb33': 'Hebrew Letter Dalet With Dagesh', '1': 'One', '\ud83d\ude00': 'Emoji: Grinning Face', '\u0080': 'Control', '\u00f6': 'Latin Small Letter O With Diaeresis' };
  t.equal(
    canonicalJson(input),
    '{"\\r":"Carriage Return","1":"One","\u0080":"Control","\u00f6":"Latin Small Letter O With Diaeresis","\u20ac":"Euro Sign","\ud83d\ude00":"Emoji: Grinning Face","\ufb33":"Hebrew Letter Dalet With Dagesh"}',
  );
});

t.test('numbers use ECMAScript formatting (RFC 8785 appendix B)', async (t) => {
  const cases: Array<[number, string]> = [
    [0, '0'], [-0, '0'], [1e21, '1e+21'], [1e-7, '1e-7'], [333333333.3333333, '333333333.3333333'],
    [9007199254740992, '9007199254740992'], [4.5, '4.5'], [2e-3, '0.002'], [1e23, '1e+23'],
  ];
  for (const [n, s] of cases) t.equal(canonicalJson(n), s, String(n));
});

t.test('the RFC 8785 example object canonicalises exactly', async (t) => {
  const value = JSON.parse('{"numbers":[333333333.33333329,1E30,4.50,2e-3,0.000000000000000000000000001],"string":"\\u20ac$\\u000F\\u000aA\'\\u0042\\u0022\\u005c\\\\\\"\\/","literals":[null,true,false]}') as unknown;
  t.equal(
    canonicalJson(value),
    '{"literals":[null,true,false],"numbers":[333333333.3333333,1e+30,4.5,0.002,1e-27],"string":"€$\\u000f\\nA\'B\\"\\\\\\\\\\"/"}',
  );
});

t.test('nested objects and arrays are canonical at every level', async (t) => {
  t.equal(canonicalJson({ b: [{ z: 1, a: 2 }], a: { y: null, x: 'x' } }), '{"a":{"x":"x","y":null},"b":[{"a":2,"z":1}]}');
});

t.test('values JSON cannot carry are refused rather than signed ambiguously', async (t) => {
  t.throws(() => canonicalJson(undefined), TypeError);
  t.throws(() => canonicalJson({ a: Number.NaN }), TypeError);
  t.throws(() => canonicalJson([Infinity]), TypeError);
  t.throws(() => canonicalJson({ a: () => 1 }), TypeError);
  t.throws(() => canonicalJson({ a: 1n }), TypeError);
  t.throws(() => canonicalJson(new Date(0)), TypeError);
  t.throws(() => canonicalJson({ a: undefined }), TypeError);
  t.equal(canonicalJson(Object.create(null) as object), '{}', 'null-prototype objects are plain');
});

t.test('lone surrogates are refused in strings and keys (RFC 8785 3.2.2.2), whole pairs are signed as they are', async (t) => {
  t.throws(() => canonicalJson({ a: 'x\ud800y' }), new TypeError('$.a: lone surrogate'), 'lone high surrogate in a value, named by path');
  t.throws(() => canonicalJson(['\udfff']), new TypeError('$[0]: lone surrogate'), 'lone low surrogate in an array');
  t.throws(() => canonicalJson({ b: { 'k\ud83d': 1 } }), new TypeError('$.b: key with a lone surrogate'), 'lone surrogate in a key');
  t.equal(canonicalJson({ a: '\ud83d\ude00' }), '{"a":"\u{1F600}"}', 'a surrogate pair is text');
});

t.test('on a Node without String.prototype.isWellFormed (the VMs\' Node 18) signing still works and still refuses lone surrogates', async (t) => {
  // A child process, so the method is gone before the protocol package and canonicalize load.
  const script = [
    'delete String.prototype.isWellFormed;',
    'const out = { before: typeof String.prototype.isWellFormed };',
    "const { canonicalJson } = await import('@vmkit/protocol');",
    'out.after = typeof String.prototype.isWellFormed;',
    "out.plain = canonicalJson({ b: 'x', a: ['\\ud83d\\ude00', 1] });",
    "for (const [k, v] of [['value', { a: 'x\\ud800' }], ['key', { ['\\udfff']: 1 }]]) {",
    '  try { canonicalJson(v); out[k] = "accepted"; } catch (e) { out[k] = e.constructor.name + ": " + e.message; }',
    '}',
    'process.stdout.write(JSON.stringify(out));',
  ].join('\n');
  const { stdout } = await promisify(execFile)(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT });
  t.same(JSON.parse(stdout), {
    before: 'undefined',
    after: 'function',
    plain: '{"a":["\u{1F600}",1],"b":"x"}',
    value: 'TypeError: $.a: lone surrogate',
    key: 'TypeError: $: key with a lone surrogate',
  });
});
