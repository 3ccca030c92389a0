import t from 'tap';
import {
  SHELL_INITIAL_WINDOW,
  SHELL_MAX_DATA_BYTES,
  commandEnvelopeSchema,
  decodeShellFrame,
  encodeShellData,
  encodeShellFrame,
  newId,
  shellOpenParams,
  signCommand,
} from '@vmkit/protocol';
import type { ShellFrame } from '@vmkit/protocol';
import { fixtureKey, fixtureShellFrame, shellFrameFixtures } from '../helpers/fixtures.ts';

t.test('every valid frame of the corpus decodes to its shape and encodes back to the same bytes', async (t) => {
  const cases = shellFrameFixtures('valid');
  t.ok(cases.length >= 8, `${cases.length} cases`);
  for (const fx of cases) {
    const raw = Buffer.from(fx.hex, 'hex');
    const got = decodeShellFrame(raw);
    t.ok(got.ok, `${fx.name}: decodes (${fx.description})`);
    if (!got.ok) continue;
    t.same(got.frame, fixtureShellFrame(fx), `${fx.name}: decoded as the corpus says`);
    t.equal(encodeShellFrame(got.frame).toString('hex'), fx.hex, `${fx.name}: encodes back byte for byte`);
  }
});

t.test('every invalid frame of the corpus is refused with its reason, without throwing', async (t) => {
  const cases = shellFrameFixtures('invalid');
  t.ok(cases.length >= 15, `${cases.length} cases`);
  for (const fx of cases) {
    const got = decodeShellFrame(Buffer.from(fx.hex, 'hex'));
    t.notOk(got.ok, `${fx.name}: refused (${fx.description})`);
    if (!got.ok) t.equal(got.error.reason, fx.expect?.reason, `${fx.name}: ${got.error.message}`);
  }
});

t.test('the encoder refuses to build a frame the peer would refuse', async (t) => {
  const bad: unknown[] = [
    { kind: 'resize', channel: 1, cols: 0, rows: 24 },
    { kind: 'credit', channel: 1, bytes: 0 },
    { kind: 'data', channel: 0, data: Buffer.from('x') },
    { kind: 'close', channel: 1, reason: 'exit', code: 300, signal: null, message: '' },
    { kind: 'eof', channel: 1, extra: true },
  ];
  for (const f of bad) t.throws(() => encodeShellFrame(f as ShellFrame), JSON.stringify(f));
  t.throws(() => encodeShellData(1, Buffer.alloc(SHELL_MAX_DATA_BYTES + 1)), 'oversized data');
  t.throws(() => encodeShellData(1, Buffer.alloc(0)), 'empty data');
});

t.test('data bytes travel untouched, as a view on the received frame', async (t) => {
  const data = Buffer.from([0xe2, 0x82, 0x00, 0xff, 0x1b]);
  const raw = encodeShellData(42, data);
  t.equal(raw.length, 6 + data.length, 'a 6-byte header, no base64');
  const got = decodeShellFrame(raw);
  t.ok(got.ok && got.frame.kind === 'data' && got.frame.data.equals(data), 'same bytes, including a split UTF-8 sequence');
  t.ok(SHELL_INITIAL_WINDOW >= 4 * SHELL_MAX_DATA_BYTES, 'the window holds several frames');
});

const open = { channel: 1, cols: 80, rows: 24, term: 'xterm-256color' };

t.test('shell.open: a minimal request and one with every field are valid', async (t) => {
  t.ok(shellOpenParams.safeParse(open).success);
  const full = { ...open, session_id: newId('shellSession'), user: 'deploy', env: { LANG: 'C.UTF-8', LC_ALL: 'C.UTF-8', TZ: 'UTC' }, command: 'uptime' };
  t.ok(shellOpenParams.safeParse(full).success);
  const signed = signCommand(fixtureKey('control_plane'), { agentId: newId('agent'), type: 'shell.open', params: full });
  t.ok(commandEnvelopeSchema.safeParse(signed.envelope).success, 'a typed, signed command like the others');
});

t.test('shell.open: environment names outside the allowlist are refused', async (t) => {
  for (const name of ['PATH', 'LD_PRELOAD', 'BASH_ENV', 'TERM', 'HOME', 'lc_all', 'LC_']) {
    t.notOk(shellOpenParams.safeParse({ ...open, env: { [name]: 'x' } }).success, name);
  }
  t.notOk(shellOpenParams.safeParse({ ...open, env: { LANG: 'a\0b' } }).success, 'a NUL in a value');
});

t.test('shell.open: bad users, terminals, sizes and channels are refused', async (t) => {
  const bad: Record<string, unknown>[] = [
    { user: 'root; rm -rf /' },
    { user: '-oProxyCommand' },
    { user: 'UPPER' },
    { term: 'xterm 256' },
    { term: '' },
    { cols: 0 },
    { rows: 1001 },
    { channel: 0 },
    { channel: 2 ** 32 },
    { command: '' },
    { command: 'a\0b' },
    { extra: 1 },
  ];
  for (const b of bad) t.notOk(shellOpenParams.safeParse({ ...open, ...b }).success, JSON.stringify(b));
});
