import t from 'tap';
import { SHELL_INITIAL_WINDOW, SHELL_MAX_DATA_BYTES, decodeShellFrame, encodeShellData, encodeShellFrame } from '@vmkit/protocol';
import type { ShellFrame } from '@vmkit/protocol';
import { spawn } from 'node-pty';
import { judgeAccount, sessionArgv, sessionEnv } from '../../vmkit-agent/src/executors/shell/account.ts';
import type { Account } from '../../vmkit-agent/src/executors/shell/account.ts';
import { DEFAULT_SHELL_LIMITS, shellLimits } from '../../vmkit-agent/src/executors/shell/config.ts';
import { ptyQueueReadable } from '../../vmkit-agent/src/executors/shell/pty-queue.ts';
import { ShellSessions } from '../../vmkit-agent/src/executors/shell/sessions.ts';
import { createLogger } from '../../vmkit-agent/src/log.ts';
import { fixtureShellFrame, shellFrameFixtures } from '../helpers/fixtures.ts';

/** The agent's shell executor in process: real PTYs, frames captured instead of a WebSocket. */

const quiet = createLogger('error', () => undefined);
const self = process.getuid?.() ?? 0;
const me: Account = { name: 'me', uid: self, gid: process.getgid?.() ?? 0, home: '/tmp', shell: '/bin/sh' };

function sessions(limits = {}) {
  const sent: ShellFrame[] = [];
  const invalid: string[] = [];
  const s = new ShellSessions({
    limits: { ...DEFAULT_SHELL_LIMITS, defaultUser: 'me', allowRoot: true, ...limits },
    send: (f) => {
      const d = decodeShellFrame(f);
      if (!d.ok) throw new Error(`the agent sent an invalid frame: ${d.error.message}`);
      sent.push(d.frame);
      return true;
    },
    reportInvalid: (m) => invalid.push(m),
    log: quiet,
    lookup: (name) => Promise.resolve(name === 'me' ? me : undefined),
  });
  return { s, sent, invalid };
}

async function until(cond: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const open = { cols: 80, rows: 24, term: 'xterm' };

t.test('node-pty exposes the write queue the input credit reads (fails loudly if an upgrade changes it)', async (t) => {
  const pty = spawn('/bin/sh', ['-c', 'exit 0'], { name: 'xterm', cols: 80, rows: 24, cwd: '/', env: {}, encoding: null });
  t.ok(ptyQueueReadable(pty));
  await new Promise<void>((resolve) => pty.onExit(() => resolve()));
});

t.test('the agent side of the frame corpus: undecodable frames are reported and dropped, valid ones for no session dropped', async (t) => {
  const { s, sent, invalid } = sessions();
  const bad = shellFrameFixtures('invalid');
  for (const fx of bad) s.handleFrame(Buffer.from(fx.hex, 'hex'));
  t.equal(invalid.length, bad.length, 'each undecodable frame is reported');
  t.equal(s.stats().droppedFrames, bad.length);
  const good = shellFrameFixtures('valid').filter((fx) => fx.direction !== 'agent');
  for (const fx of good) s.handleFrame(Buffer.from(fx.hex, 'hex'));
  t.equal(s.stats().droppedFrames, bad.length + good.length, 'frames the hub may send, but for channels with no session here');
  t.same(sent, [], 'nothing is sent back for them');
  t.ok(good.every((fx) => Object.keys(fixtureShellFrame(fx)).length > 0));
});

t.test('a session sends output, then a close with the exit code; a second open on the same channel is refused', async (t) => {
  const { s, sent } = sessions();
  const r = await s.open({ channel: 5, ...open, command: 'printf abc; exit 4' });
  t.equal(r.status, 'succeeded');
  t.equal((await s.open({ channel: 5, ...open })).status, 'failed', 'channel in use');
  await until(() => sent.some((f) => f.kind === 'close'), 'close');
  const data = sent.flatMap((f) => (f.kind === 'data' ? [f.data.toString()] : [])).join('');
  t.equal(data, 'abc');
  t.same(sent.at(-1), { kind: 'close', channel: 5, reason: 'exit', code: 4, signal: null, message: '' });
  t.equal(s.stats().open, 0, 'forgotten once over');
});

t.test('input is credited back once it reached the process; past the window the session ends with an error', async (t) => {
  const { s, sent } = sessions();
  await s.open({ channel: 6, ...open, command: 'stty raw -echo; cat > /dev/null' });
  const chunk = Buffer.alloc(SHELL_MAX_DATA_BYTES, 0x61);
  const n = SHELL_INITIAL_WINDOW / SHELL_MAX_DATA_BYTES;
  for (let i = 0; i < n; i++) s.handleFrame(encodeShellData(6, chunk));
  const credited = () => sent.reduce((sum, f) => sum + (f.kind === 'credit' ? f.bytes : 0), 0);
  await until(() => credited() >= SHELL_INITIAL_WINDOW / 2, 'credit for bytes cat read');
  t.ok(credited() <= SHELL_INITIAL_WINDOW, `never more credit than bytes written (${credited()})`);
  // The hub may now send what it was credited, and not a byte more.
  const room = credited();
  for (let left = room; left > 0; left -= SHELL_MAX_DATA_BYTES) s.handleFrame(encodeShellData(6, chunk.subarray(0, Math.min(left, SHELL_MAX_DATA_BYTES))));
  const before = sent.filter((f) => f.kind === 'close').length;
  t.equal(before, 0, 'within the window: the session goes on');
  // A hub that ignores its window: the agent ends the session rather than buffer it
  // (cat may have earned a little more credit meanwhile, hence more than one chunk).
  for (let i = 0; i < 2 * n && !sent.some((f) => f.kind === 'close'); i++) s.handleFrame(encodeShellData(6, chunk));
  await until(() => sent.some((f) => f.kind === 'close'), 'close');
  const close = sent.find((f) => f.kind === 'close');
  t.equal(close?.kind === 'close' ? close.reason : '', 'error');
  t.match(close?.kind === 'close' ? close.message : '', /window/);
});

t.test('an operator close hangs the session up and it answers with reason closed', async (t) => {
  const { s, sent } = sessions();
  await s.open({ channel: 7, ...open, command: 'sleep 600' });
  s.handleFrame(encodeShellFrame({ kind: 'close', channel: 7, reason: 'closed', code: null, signal: null, message: 'bye' }));
  await until(() => sent.some((f) => f.kind === 'close'), 'close');
  t.same(sent.at(-1), { kind: 'close', channel: 7, reason: 'closed', code: null, signal: 'SIGHUP', message: 'bye' });
});

t.test('a dropped connection ends every session without sending anything', async (t) => {
  const { s, sent } = sessions();
  await s.open({ channel: 8, ...open, command: 'sleep 600' });
  await s.open({ channel: 9, ...open, command: 'sleep 600' });
  t.equal(s.stats().open, 2);
  s.disconnected();
  await until(() => s.stats().open === 0, 'sessions ended');
  t.same(
    sent.filter((f) => f.kind === 'close'),
    [],
    'no frames towards a connection that is gone',
  );
});

t.test('limits and refusals', async (t) => {
  t.equal((await sessions({ enabled: false }).s.open({ channel: 1, ...open })).status, 'failed');
  const one = sessions({ maxSessions: 1 });
  await one.s.open({ channel: 1, ...open, command: 'sleep 600' });
  const second = await one.s.open({ channel: 2, ...open });
  t.same(second.status === 'failed' ? second.error.key : '', 'too_many_sessions');
  one.s.disconnected();
  const unknown = await sessions().s.open({ channel: 3, ...open, user: 'nobody-here' });
  t.same(unknown.status === 'failed' ? unknown.error.key : '', 'shell_user_refused');
});

t.test('account rules: root only when allowed, no nologin shells, no switch without root; a clean environment', async (t) => {
  const root: Account = { name: 'root', uid: 0, gid: 0, home: '/root', shell: '/bin/bash' };
  const alice: Account = { name: 'alice', uid: 1000, gid: 1000, home: '/home/alice', shell: '/bin/bash' };
  t.notOk(judgeAccount('root', root, { allowRoot: false, selfUid: 0 }).ok);
  t.ok(judgeAccount('root', root, { allowRoot: true, selfUid: 0 }).ok);
  t.notOk(judgeAccount('x', undefined, { allowRoot: true, selfUid: 0 }).ok);
  t.notOk(judgeAccount('daemon', { ...alice, name: 'daemon', shell: '/usr/sbin/nologin' }, { allowRoot: false, selfUid: 0 }).ok);
  t.notOk(judgeAccount('alice', alice, { allowRoot: false, selfUid: 1001 }).ok, 'a non-root agent cannot become another user');
  t.same(sessionArgv(alice, 0, undefined), {
    file: '/usr/bin/setpriv',
    args: ['--reuid=1000', '--regid=1000', '--init-groups', '--', '/bin/bash', '-l'],
  });
  t.same(sessionArgv(alice, 1000, 'id'), { file: '/bin/bash', args: ['-c', 'id'] }, 'no switch when already that user');
  const env = sessionEnv(alice, 'xterm', { LANG: 'C.UTF-8', HOME: '/evil' });
  t.equal(env.HOME, '/home/alice', 'the account wins over anything passed');
  t.equal(env.TERM, 'xterm');
  t.equal(env.LANG, 'C.UTF-8');
  t.same(shellLimits(undefined), DEFAULT_SHELL_LIMITS);
  t.equal(DEFAULT_SHELL_LIMITS.idleTimeoutMs, 20 * 60_000, '20 minutes, as Session Manager');
});
