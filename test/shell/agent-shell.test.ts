import t from 'tap';
import type { Test } from 'tap';
import { SHELL_INITIAL_WINDOW } from '@vmkit/protocol';
import type { ApiError } from '../../control-plane/src/errors.ts';
import type { ShellChannel, ShellExit, ShellOpenRequest, ShellOpener } from '../../control-plane/src/shell/channel.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { enrollRealAgent, plainBashShell, waitAgentState } from '../helpers/real-agent.ts';
import type { AgentProcess } from '../agent/agent-process.ts';

/**
 * The shell end to end: real vmkit-agent processes (PTYs from node-pty) against a real
 * control plane, through ctx.shellOpener. The agents run as this test's user; the
 * account switch itself is covered in agent-shell-user.test.ts inside a sandbox.
 */

interface Agent {
  agentId: string;
  proc: AgentProcess;
}

async function startAgent(t: Test, cp: TestControlPlane, name: string, shell: Record<string, unknown>): Promise<Agent> {
  const agent = await enrollRealAgent(t, cp, { name });
  agent.patchConfig({ shell });
  const proc = agent.start();
  await waitAgentState(cp, agent.instanceId, 'connected', 120_000);
  return { agentId: agent.agentId, proc };
}

/** What an operator door does with a channel: collects output (passing it on at once unless told to hold), awaits the exit. */
class Term {
  out = Buffer.alloc(0);
  exit: ShellExit | undefined;
  #wake: (() => void)[] = [];
  readonly ch: ShellChannel;
  constructor(ch: ShellChannel) {
    this.ch = ch;
    ch.onData((chunk, done) => {
      this.out = Buffer.concat([this.out, chunk]);
      done();
      this.#notify();
    });
    ch.onExit((e) => {
      this.exit = e;
      this.#notify();
    });
  }
  text(): string {
    return this.out.toString('utf8');
  }
  type(s: string): void {
    this.ch.write(Buffer.from(s, 'utf8'));
  }
  async until(cond: () => boolean, what: string, timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!cond()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; output so far:\n${this.text().slice(-2000)}`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 200);
        this.#wake.push(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
  }
  waitFor(re: RegExp): Promise<void> {
    return this.until(() => re.test(this.text()), String(re));
  }
  async exited(): Promise<ShellExit> {
    await this.until(() => this.exit !== undefined, 'the exit');
    return this.exit as ShellExit;
  }
  #notify(): void {
    for (const w of this.#wake.splice(0)) w();
  }
}

function openerOf(cp: TestControlPlane): ShellOpener {
  const o = cp.ctx.shellOpener;
  if (!o) throw new Error('ctx.shellOpener is not set');
  return o;
}

async function openTerm(cp: TestControlPlane, a: Agent, req: Partial<ShellOpenRequest> = {}): Promise<Term> {
  const ch = await openerOf(cp).open({ agentId: a.agentId, cols: 80, rows: 24, term: 'xterm-256color', ...req });
  return new Term(ch);
}

async function refusal(p: Promise<unknown>): Promise<ApiError> {
  return p.then(
    () => {
      throw new Error('expected a refusal');
    },
    (e: unknown) => e as ApiError,
  );
}

// bash without the host root's dotfiles (see plainBashShell), instead of root's login shell.
const rootShell = { default_user: 'root', allow_root: true, program: plainBashShell() };

t.test('an agent that allows it runs shells; its sessions work end to end', async (t) => {
  const cp = await startTestControlPlane({ config: { agentHub: { heartbeatIntervalMs: 1_000, deadAfterMs: 10_000 } } });
  t.teardown(() => cp.close());
  const a = await startAgent(t, cp, 'shell-main', { ...rootShell, max_sessions: 8 });

  await t.test('typed input reaches the shell and its output comes back (echo round trip)', async (t) => {
    const term = await openTerm(cp, a);
    // The quotes keep the echoed command line from matching what the command prints.
    term.type('echo hel""lo-$((40+2))\r');
    await term.waitFor(/hello-42/);
    t.match(term.text(), /hello-42/);
    term.ch.close();
    t.equal((await term.exited()).reason, 'closed');
  });

  await t.test('`stty size` follows a resize', async (t) => {
    const term = await openTerm(cp, a, { cols: 80, rows: 24 });
    term.type('stty size\r');
    await term.waitFor(/^24 80\r?$/m);
    term.ch.resize(132, 43);
    term.type('stty size\r');
    await term.waitFor(/^43 132\r?$/m);
    t.match(term.text(), /^43 132\r?$/m);
    term.ch.close();
    await term.exited();
  });

  await t.test('`exit 3` ends the session with code 3', async (t) => {
    const term = await openTerm(cp, a);
    term.type('exit 3\r');
    t.same(await term.exited(), { code: 3, signal: null, reason: 'exit' });
  });

  await t.test('shell.program in the agent config replaces the account\'s login shell', async (t) => {
    const term = await openTerm(cp, a, { command: 'echo "shell=$SHELL"' });
    const exit = await term.exited();
    t.equal(exit.code, 0);
    t.match(term.text(), `shell=${plainBashShell()}`, 'the configured program, not root\'s login shell from passwd');
  });

  await t.test('a single command (exec) returns its output and its status', async (t) => {
    const term = await openTerm(cp, a, { command: 'echo out-$((6*7)); exit 7' });
    const exit = await term.exited();
    t.match(term.text(), /out-42/);
    t.same(exit, { code: 7, signal: null, reason: 'exit' });
  });

  await t.test('a command killed by a signal reports the signal', async (t) => {
    const term = await openTerm(cp, a, { command: 'kill -TERM $$' });
    t.same(await term.exited(), { code: null, signal: 'SIGTERM', reason: 'exit' });
  });

  await t.test('the session starts in the home directory with a clean environment plus the allowlisted names', async (t) => {
    const term = await openTerm(cp, a, { command: 'pwd; env | sort', env: { LANG: 'C.UTF-8', LC_TIME: 'C' } });
    await term.exited();
    const lines = term.text().split(/\r?\n/);
    t.equal(lines[0], '/root', 'cwd is the home directory');
    t.ok(lines.includes('TERM=xterm-256color'));
    t.ok(lines.includes('LANG=C.UTF-8') && lines.includes('LC_TIME=C'), 'allowlisted names passed');
    t.ok(lines.includes('USER=root') && lines.includes('HOME=/root'));
    const leaked = lines.filter((l) => /^(TAP|NODE_OPTIONS|npm_|VMKIT_)/.test(l));
    t.same(leaked, [], "nothing of the agent's own environment leaks in");
  });

  await t.test('a large output through a slow reader stays within the window: the agent pauses the PTY', async (t) => {
    const total = 4_000_000;
    const ch = await openerOf(cp).open({ agentId: a.agentId, cols: 80, rows: 24, term: 'xterm', command: `head -c ${total} /dev/zero` });
    let received = 0;
    let held = 0;
    let maxHeld = 0;
    let dones: (() => void)[] = [];
    let exit: ShellExit | undefined;
    ch.onData((chunk, done) => {
      received += chunk.length;
      held += chunk.length;
      maxHeld = Math.max(maxHeld, held);
      dones.push(done);
      // The slow reader: it passes bytes on only once it holds a whole window, so the agent
      // must stop (it has no credit) every time, whatever the speed of this machine.
      if (held >= SHELL_INITIAL_WINDOW) {
        const release = dones;
        dones = [];
        held = 0;
        setImmediate(() => release.forEach((d) => d()));
      }
    });
    ch.onExit((e) => (exit = e));
    const deadline = Date.now() + 300_000;
    while (exit === undefined) {
      if (Date.now() > deadline) throw new Error(`no exit; received ${received}`);
      if (held > 0 && held < SHELL_INITIAL_WINDOW && dones.length > 0) {
        // The tail of the output (less than a window): pass it on so the agent can finish.
        const release = dones;
        dones = [];
        held = 0;
        release.forEach((d) => d());
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    t.same(exit, { code: 0, signal: null, reason: 'exit' });
    t.ok(maxHeld <= SHELL_INITIAL_WINDOW, `the control plane never held more than the window (max ${maxHeld} of ${SHELL_INITIAL_WINDOW})`);
    const line = await a.proc.waitForLog(new RegExp(`shell session ended .*"channel":${ch.id},`));
    const stats = JSON.parse(line.slice(line.indexOf('{'))) as { pauses: number; max_pending_bytes: number; bytes_out: number };
    t.equal(received, stats.bytes_out, 'every byte the agent read from the PTY arrived, none twice');
    t.equal(received, total, 'the whole output arrived, its tail included');
    t.ok(stats.pauses >= 1, `the agent paused the PTY (${stats.pauses} times)`);
    t.ok(
      stats.max_pending_bytes <= SHELL_INITIAL_WINDOW,
      `the agent never held more than a window of unsent output (max ${stats.max_pending_bytes} bytes for a ${total}-byte output)`,
    );
  });

  await t.test('an agent killed mid-session: the channel ends with reason agent_disconnected', async (t) => {
    const term = await openTerm(cp, a);
    term.type('echo ready\r');
    await term.waitFor(/^ready\r?$/m);
    a.proc.child.kill('SIGKILL');
    const exit = await term.exited();
    t.equal(exit.reason, 'agent_disconnected');
    t.match(exit.message, /agent disconnected/);
  });
});

t.test('limits: too many sessions, idle timeout and maximum length', async (t) => {
  const cp = await startTestControlPlane({ config: { agentHub: { heartbeatIntervalMs: 1_000, deadAfterMs: 10_000 } } });
  t.teardown(() => cp.close());
  const a = await startAgent(t, cp, 'shell-limits', { ...rootShell, max_sessions: 1, idle_timeout_ms: 3_000, max_session_ms: 10_000 });
  // Output every 0.2 s keeps a session from being idle.
  const busy = 'while :; do echo tick; sleep 0.2; done';

  await t.test('past max_sessions a new session is refused with too_many_sessions', async (t) => {
    const first = await openTerm(cp, a, { command: busy });
    const err = await refusal(openTerm(cp, a));
    t.equal(err.key, 'too_many_sessions');
    t.match(err.message, /1 shell sessions/);
    first.ch.close();
    await first.exited();
  });

  await t.test('a session with no input or output ends at the idle timeout', async (t) => {
    const term = await openTerm(cp, a, { command: 'sleep 600' });
    const exit = await term.exited();
    t.equal(exit.reason, 'idle_timeout');
    t.equal(exit.signal, 'SIGHUP', 'its process group was hung up');
    t.match(exit.message, /no input or output/);
  });

  await t.test('a busy session ends at the maximum session length', async (t) => {
    const term = await openTerm(cp, a, { command: busy });
    const exit = await term.exited();
    t.equal(exit.reason, 'max_length');
    t.match(term.text(), /tick/);
  });
});

t.test('policy: a disabled shell and root are refused', async (t) => {
  const cp = await startTestControlPlane({ config: { agentHub: { heartbeatIntervalMs: 1_000, deadAfterMs: 10_000 } } });
  t.teardown(() => cp.close());
  const [disabled, noRoot] = await Promise.all([
    startAgent(t, cp, 'shell-off', { enabled: false, ...rootShell }),
    startAgent(t, cp, 'shell-no-root', { default_user: 'root' }),
  ]);

  await t.test('an agent with the shell disabled refuses with shell_disabled', async (t) => {
    const err = await refusal(openTerm(cp, disabled));
    t.equal(err.key, 'shell_disabled');
    t.equal(err.status, 409);
  });

  await t.test('root is refused unless the agent allows it', async (t) => {
    const byDefault = await refusal(openTerm(cp, noRoot));
    t.equal(byDefault.key, 'shell_user_refused');
    t.match(byDefault.message, /root/);
    const named = await refusal(openTerm(cp, noRoot, { user: 'root' }));
    t.equal(named.key, 'shell_user_refused');
  });

  await t.test('an unknown user is refused', async (t) => {
    const err = await refusal(openTerm(cp, noRoot, { user: 'no-such-user-here' }));
    t.equal(err.key, 'shell_user_refused');
    t.match(err.message, /does not exist/);
  });
});
