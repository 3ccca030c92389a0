import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { spawn } from 'node-pty';
import t from 'tap';
import type { Test } from 'tap';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { enrollRealAgent, plainBashShell, waitAgentState } from '../helpers/real-agent.ts';

/**
 * `vmkit shell` as an operator runs it: the real CLI on a real pseudo-terminal (node-pty
 * plays the operator's terminal emulator), against a real agent. A small sh wrapper on
 * that terminal notes the terminal's settings before and after the CLI and its exit
 * status, as an operator's own shell would see them.
 */

const ROOT = join(import.meta.dirname, '..', '..');
const notRoot = process.getuid?.() === 0 ? false : 'the agent must run shells as root here (tests run as root under CI)';

if (fileNeeds(notRoot)) {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const agent = await enrollRealAgent(t, cp, { name: 'tty-vm' });
  agent.patchConfig({ shell: { default_user: 'root', allow_root: true, max_sessions: 4, program: plainBashShell() } });
  agent.start();
  await waitAgentState(cp, agent.instanceId, 'connected', 120_000);
  const operator = await cp.createKey(['shell'], { name: 'tty operator' });

  const dir = mkdtempSync(join(tmpdir(), 'vmkit-cli-tty-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const wrapper = join(dir, 'operator.sh');
  writeFileSync(
    wrapper,
    [
      '#!/bin/sh',
      '# $1 notes dir, $2 node, $3 instance, $4 url, $5 key',
      'tty > "$1/tty"',
      'stty -g > "$1/before"',
      'stty -a > "$1/before-a"',
      '"$2" control-plane/bin/vmkit.js shell "$3" --url "$4" --key "$5"',
      'echo $? > "$1/code"',
      'stty -g > "$1/after"',
      'echo OPERATOR-SHELL-BACK',
      '',
    ].join('\n'),
    { mode: 0o755 },
  );
  const note = (name: string) => readFileSync(join(dir, name), 'utf8').trim();

  /** The wrapper on a fresh pseudo-terminal, noting into `notes`; `waitFor` watches its screen. */
  const operatorTerminal = (t: Test, notes: string) => {
    const term = spawn('/bin/sh', [wrapper, notes, process.execPath, 'tty-vm', cp.url, operator.secret], {
      name: 'xterm-256color',
      cols: 100,
      rows: 30,
      cwd: ROOT,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', TERM: 'xterm-256color', HOME: dir },
    });
    let screen = '';
    const waiters = new Set<() => void>();
    term.onData((d) => {
      screen += d;
      for (const w of [...waiters]) w();
    });
    let exited = false;
    term.onExit(() => {
      exited = true;
      for (const w of [...waiters]) w();
    });
    t.teardown(() => {
      if (!exited) term.kill('SIGKILL');
    });
    /** Resolves when `re` shows after `from`; a bound for a stuck session, not a speed check. */
    const waitFor = (re: RegExp, from = 0, ms = 120_000) =>
      new Promise<void>((resolve, reject) => {
        const check = () => {
          if (re.test(screen.slice(from))) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve();
          } else if (exited) {
            waiters.delete(check);
            clearTimeout(timer);
            reject(new Error(`the terminal closed before ${String(re)}; screen:\n${screen.slice(-2000)}`));
          }
        };
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${String(re)}; screen:\n${screen.slice(-2000)}`));
        }, ms);
        waiters.add(check);
        check();
      });
    return { term, waitFor, screen: () => screen, exited: () => exited };
  };

  t.test('an interactive session on a real terminal', async (t) => {
    const { term, waitFor, screen: shown, exited } = operatorTerminal(t, dir);
    // The remote shell answers: the session is up.
    term.write('echo rea""dy-$((40+2))\r');
    await waitFor(/ready-42/);

    await t.test('the local terminal is in raw mode while the session runs', async (t) => {
      const tty = note('tty');
      const during = spawnSync('stty', ['-F', tty, '-a'], { encoding: 'utf8' });
      t.equal(during.status, 0, during.stderr);
      for (const flag of ['-icanon', '-echo', '-isig', '-icrnl']) t.match(during.stdout, new RegExp(`(^|\\s)${flag}(\\s|$)`), `${flag} is set`);
      t.not(spawnSync('stty', ['-g', '-F', tty], { encoding: 'utf8' }).stdout.trim(), note('before'), 'the settings differ from before');
      t.match(note('before-a'), /(^|\s)icanon(\s|$)/, 'before the CLI the terminal was in canonical (cooked) mode');
    });

    await t.test('^C goes to the remote command, not to the CLI', async (t) => {
      const mark = shown().length;
      term.write('sleep 600; echo sl""ept-through\r');
      // The remote shell echoes the line once it runs it; then interrupt it.
      await waitFor(/sleep 600; echo sl""ept-through/, mark);
      term.write('\x03');
      term.write('echo after-in""terrupt\r');
      await waitFor(/after-interrupt/, mark);
      t.notMatch(shown().slice(mark), /slept-through/, 'the sleep was interrupted: what came after it never ran');
      t.notOk(exited(), 'the CLI is still running');
    });

    await t.test('resizing the local terminal resizes the remote one (`stty size`)', async (t) => {
      const mark = shown().length;
      term.write('stty size\r');
      await waitFor(/^30 100\r?$/m, mark);
      // A remote command that prints the size when its terminal is resized (SIGWINCH), so
      // the test waits for the resize itself rather than for a guess at its timing.
      const mark2 = shown().length;
      term.write(`sh -c 'trap "stty size; exit 0" WINCH; echo ar""med; while :; do sleep 1; done'\r`);
      await waitFor(/^armed\r?$/m, mark2);
      // The kernel sends SIGWINCH to the CLI, which sends the new size on.
      term.resize(132, 43);
      await waitFor(/^43 132\r?$/m, mark2);
      t.pass('the remote PTY took the new size');
    });

    await t.test('the remote exit status is the CLI status, and the terminal is restored', async (t) => {
      const mark = shown().length;
      term.write('exit 5\r');
      await waitFor(/OPERATOR-SHELL-BACK/, mark);
      t.equal(note('code'), '5', 'vmkit shell exited with 5');
      t.ok(existsSync(join(dir, 'after')));
      t.equal(note('after'), note('before'), 'stty -g after the CLI equals stty -g before it');
    });
  });

  // Killed from elsewhere (a closed terminal window sends SIGHUP, `kill` and systemd SIGTERM):
  // the CLI still gives the operator's terminal back as it found it.
  for (const signal of ['SIGTERM', 'SIGHUP'] as const) {
    t.test(`${signal} to vmkit shell restores the terminal and exits 128+signal`, async (t) => {
      const notes = mkdtempSync(join(dir, `${signal}-`));
      const { term, waitFor, screen } = operatorTerminal(t, notes);
      term.write('echo rea""dy-$((40+2))\r');
      await waitFor(/ready-42/);
      // The wrapper's one child is the CLI (node): signal it alone, as `kill PID` would.
      const children = spawnSync('pgrep', ['-P', String(term.pid)], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
      t.equal(children.length, 1, 'the wrapper runs one child, the CLI');
      t.not(readFileSync(`/proc/${children[0]}/cmdline`, 'utf8').indexOf('vmkit.js'), -1, 'and it is vmkit');
      const noted = (name: string) => readFileSync(join(notes, name), 'utf8').trim();
      t.not(spawnSync('stty', ['-g', '-F', noted('tty')], { encoding: 'utf8' }).stdout.trim(), noted('before'), 'raw mode while it runs');
      const mark = screen().length;
      process.kill(Number(children[0]), signal);
      await waitFor(/OPERATOR-SHELL-BACK/, mark);
      t.equal(noted('code'), String(128 + (signal === 'SIGTERM' ? 15 : 1)), `vmkit shell exited with 128+${signal}`);
      t.equal(noted('after'), noted('before'), 'stty -g after the CLI equals stty -g before it');
    });
  }
}
