import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { parseAsciicast } from '../../control-plane/src/shell/recording.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { enrollRealAgent, plainBashShell, waitAgentState } from '../helpers/real-agent.ts';
import type { RealAgent } from '../helpers/real-agent.ts';
import type { AgentProcess } from '../agent/agent-process.ts';
import { openShell } from '../helpers/shell-client.ts';
import type { TestShell } from '../helpers/shell-client.ts';
import { prerequisite } from '../helpers/prereq.ts';

/**
 * Both operator doors end to end: the `vmkit shell` WebSocket (and the CLI itself) and
 * the SSH gateway (OpenSSH's own client), through the session service, the hub and a
 * real vmkit-agent with real PTYs. The agent runs as this test's user (root under CI).
 */

const ROOT = join(import.meta.dirname, '..', '..');
const noSsh = spawnSync('ssh', ['-V']).error ? 'OpenSSH client (ssh) is not installed' : false;
const notRoot = process.getuid?.() === 0 ? false : 'the agent must run shells as root here (tests run as root under CI)';

const cp = await startTestControlPlane({
  config: {
    agentHub: { heartbeatIntervalMs: 1_000, deadAfterMs: 10_000 },
    // Key revocation is checked every half second: the bound a revoked key's session lives on.
    shell: { idleTimeoutMs: 20 * 60_000, maxSessionMs: 3_600_000, recordInput: false, requireRecording: true, keyCheckMs: 500 },
    sshGateway: { port: 0, host: '127.0.0.1', required: true },
  },
});
t.teardown(() => cp.close());

interface Agent {
  real: RealAgent;
  proc: AgentProcess;
}
let agent: Agent | undefined;
/** One agent for the whole file: its teardown is the file's, not the first subtest's. */
async function startAgent(): Promise<Agent> {
  const real = await enrollRealAgent(t, cp, { name: 'doors-vm' });
  // bash without the host root's dotfiles (see plainBashShell), instead of root's login shell.
  real.patchConfig({ shell: { default_user: 'root', allow_root: true, max_sessions: 16, program: plainBashShell() } });
  const proc = real.start();
  await waitAgentState(cp, real.instanceId, 'connected', 120_000);
  return { real, proc };
}

const operator = await cp.createKey(['shell'], { name: 'operator' });

async function shell(query: Record<string, string> = {}, key = operator.secret, instance = 'doors-vm'): Promise<TestShell> {
  const r = await openShell(cp.url, instance, { key, query });
  if ('refused' in r) throw new Error(`refused: ${JSON.stringify(r.refused)}`);
  await r.session.until(() => r.session.opened, 'the opened message');
  return r.session;
}

type SessionView = { id: string; via: string; exit_code: number | null; end_reason: string | null; bytes_in: number; bytes_out: number; ended_at: string | null };
async function sessionRow(id: string): Promise<SessionView | undefined> {
  const res = await cp.api<{ items: SessionView[] }>('GET', '/api/shell-sessions?limit=500');
  return res.body.items.find((s) => s.id === id);
}
async function recording(id: string): Promise<ReturnType<typeof parseAsciicast>> {
  const res = await fetch(`${cp.url}/api/shell-sessions/${id}/recording`, { headers: { authorization: `Bearer ${operator.secret}` } });
  return parseAsciicast(await res.text());
}

t.test('the WebSocket door (vmkit shell)', { skip: prerequisite(notRoot) }, async (t) => {
  agent ??= await startAgent();

  await t.test('typed input reaches the shell and its output comes back (echo round trip)', async (t) => {
    const s = await shell();
    s.type('echo rou""nd-$((6*7))\r');
    await s.waitFor(/round-42/);
    s.type('exit\r');
    const exit = await s.waitExit();
    t.match(exit, { code: 0, reason: 'exit' });
  });

  await t.test('`stty size` follows a resize', async (t) => {
    const s = await shell({ cols: '80', rows: '24' });
    s.type('stty size\r');
    await s.waitFor(/^24 80\r?$/m);
    const mark = s.text.length;
    s.resize(132, 43);
    s.type('stty size\r');
    await s.waitFor(/^43 132\r?$/m, mark);
    s.type('exit\r');
    await s.waitExit();
    t.pass('the PTY took the new size');
  });

  await t.test('`exit 3` in the shell ends the session with code 3', async (t) => {
    const s = await shell();
    s.type('exit 3\r');
    t.match(await s.waitExit(), { type: 'exit', code: 3, reason: 'exit' });
    await s.waitClosed();
  });

  await t.test('exec: a single command returns its output and status', async (t) => {
    const s = await shell({ command: 'echo exec-ou""tput; exit 7' });
    const exit = await s.waitExit();
    t.match(s.text, /exec-output/);
    t.match(exit, { code: 7, reason: 'exit' });
  });

  await t.test('the recording parses as asciicast v2 and holds what the session printed', async (t) => {
    const s = await shell({ cols: '100', rows: '30' });
    s.type('echo recor""ded-line\r');
    await s.waitFor(/recorded-line/);
    s.resize(90, 20);
    s.type('exit\r');
    await s.waitExit();
    const id = s.opened?.session_id ?? '';
    const cast = await recording(id);
    t.match(cast.header, { version: 2, width: 100, height: 30, env: { TERM: 'xterm-256color' } });
    t.match(cast.events.filter((e) => e[1] === 'o').map((e) => e[2]).join(''), /recorded-line/);
    t.ok(cast.events.some((e) => e[1] === 'r' && e[2] === '90x20'), 'the resize is in the recording');
    t.notOk(cast.events.some((e) => e[1] === 'i'), 'input is not recorded unless asked for');
    const row = await sessionRow(id);
    t.match(row, { via: 'websocket', exit_code: 0, end_reason: 'exit' });
    t.ok(row && row.bytes_in > 0 && row.bytes_out > 0, 'bytes both ways are counted');
  });

  await t.test('opening and closing are audit rows on the operator key', async (t) => {
    const s = await shell({ command: 'true' });
    await s.waitExit();
    const id = s.opened?.session_id ?? '';
    const audit = await cp.api<{ items: { action: string; target_ids: Record<string, string> }[] }>('GET', `/api/audit?key_id=${operator.id}&limit=500`);
    const mine = audit.body.items.filter((a) => a.target_ids.session_id === id).map((a) => a.action);
    t.same(mine.sort(), ['shell.close', 'shell.open']);
  });

  // Never spawnSync here: the control plane runs in this process and must keep answering.
  const vmkit = (args: string[]) =>
    new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      const child = spawn(process.execPath, ['control-plane/bin/vmkit.js', ...args], { cwd: ROOT, stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (err += c.toString()));
      child.stdin.end();
      child.on('exit', (code) => resolve({ code, out, err }));
    });

  await t.test('the vmkit CLI runs a command and exits with its status', async (t) => {
    const r = await vmkit(['shell', 'doors-vm', '--url', cp.url, '--key', operator.secret, '--', 'echo from-c""li;', 'exit 3']);
    t.equal(r.code, 3, r.err);
    t.match(r.out, /from-cli/);
  });

  await t.test('the vmkit CLI says why a session is refused and exits 1', async (t) => {
    const reader = await cp.createKey(['instances:read']);
    const r = await vmkit(['shell', 'doors-vm', '--url', cp.url, '--key', reader.secret]);
    t.equal(r.code, 1);
    t.match(r.err, /forbidden: The API key .* lacks the scope shell/);
    const door = `${cp.url.replace(/^http/, 'ws')}/api/instances/doors-vm/shell`;
    t.match(r.err, `(GET ${door} answered 403)`, 'the refusal names the URL it tried, without its query');
  });

  await t.test('the vmkit CLI names the URL it could not reach', async (t) => {
    const dead = await new Promise<string>((resolve) => {
      const probe = createServer();
      probe.listen(0, '127.0.0.1', () => {
        const { port } = probe.address() as AddressInfo;
        probe.close(() => resolve(`http://127.0.0.1:${port}`));
      });
    });
    const r = await vmkit(['shell', 'doors-vm', '--url', dead, '--key', operator.secret]);
    t.equal(r.code, 1);
    t.equal(r.err, `error: cannot reach the control plane at ${dead.replace(/^http/, 'ws')}/api/instances/doors-vm/shell: ECONNREFUSED\n`);
  });

  await t.test('a key revoked mid-session closes the session, and the operator is told why', async (t) => {
    const short = await cp.createKey(['shell'], { name: 'short-lived' });
    const s = await shell({}, short.secret);
    s.type('echo before-revoke\r');
    await s.waitFor(/before-revoke/);
    await cp.api('DELETE', `/api/keys/${short.id}`);
    const exit = await s.waitExit(60_000);
    t.match(exit, { reason: 'key_revoked', message: /revoked/ });
    await s.waitClosed();
  });

  await t.test('an idle session is closed at the idle timeout', async (t) => {
    // The service reads the bound when a session opens: this session gets 2 s.
    const before = cp.ctx.config.shell.idleTimeoutMs;
    cp.ctx.config.shell.idleTimeoutMs = 2_000;
    let s: TestShell;
    try {
      s = await shell();
    } finally {
      cp.ctx.config.shell.idleTimeoutMs = before;
    }
    t.match(await s.waitExit(), { reason: 'idle_timeout', message: /idle/ });
    t.match(await sessionRow(s.opened?.session_id ?? ''), { end_reason: 'idle_timeout' });
  });

  await t.test('one operator never sees another operator session', async (t) => {
    const other = await cp.createKey(['shell'], { name: 'other operator' });
    const s = await shell({ command: 'echo private' });
    await s.waitExit();
    const list = await cp.api<{ items: { id: string }[] }>('GET', '/api/shell-sessions', { key: other.secret });
    t.notOk(list.body.items.some((x) => x.id === s.opened?.session_id));
  });
});

t.test('the SSH gateway', { skip: prerequisite(noSsh || notRoot) }, async (t) => {
  agent ??= await startAgent();
  const gw = cp.ctx.sshGateway;
  if (!gw) throw new Error('the SSH gateway is not listening');
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-ssh-door-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const knownHosts = join(dir, 'known_hosts');
  writeFileSync(knownHosts, `[127.0.0.1]:${gw.port} ${gw.hostKey.publicKey}\n`);
  const keygen = (name: string) => {
    spawnSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', name, '-f', join(dir, name)]);
    return join(dir, name);
  };
  const registered = keygen('registered');
  const added = await cp.api<{ id: string }>('POST', `/api/keys/${operator.id}/ssh-keys`, {
    key: operator.secret,
    body: { public_key: readFileSync(`${registered}.pub`, 'utf8') },
  });
  t.equal(added.status, 201);
  const ssh = (identity: string, args: string[]) =>
    new Promise<{ code: number | null; out: string; err: string }>((resolve) => {
      const child = spawn('ssh', [
        '-p', String(gw.port),
        '-i', identity,
        '-o', 'IdentitiesOnly=yes',
        '-o', 'BatchMode=yes',
        '-o', `UserKnownHostsFile=${knownHosts}`,
        '-o', 'StrictHostKeyChecking=yes',
        '-o', 'GlobalKnownHostsFile=/dev/null',
        '-F', '/dev/null',
        ...args,
      ], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (err += c.toString()));
      child.stdin.end();
      child.on('exit', (code) => resolve({ code, out, err }));
    });

  await t.test('OpenSSH with a registered key runs a command; its output and status come back', async (t) => {
    const r = await ssh(registered, ['doors-vm@127.0.0.1', 'echo via-s""sh; exit 3']);
    t.equal(r.code, 3, r.err);
    t.match(r.out, /via-ssh/);
  });

  await t.test('OpenSSH with a pseudo-terminal: an echo round trip in an interactive shell, exit 3', async (t) => {
    // -tt forces a PTY without a local terminal; the shell reads the script from stdin.
    const child = spawn('ssh', [
      '-tt', '-p', String(gw.port), '-i', registered, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes',
      '-o', `UserKnownHostsFile=${knownHosts}`, '-o', 'StrictHostKeyChecking=yes', '-F', '/dev/null', 'doors-vm@127.0.0.1',
    ], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (c: Buffer) => (out += c.toString()));
    child.stdin.write('echo inter""active-$((1+1))\r');
    child.stdin.write('exit 3\r');
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    t.equal(code, 3);
    t.match(out, /interactive-2/);
  });

  await t.test('an unregistered key is refused', async (t) => {
    const stranger = keygen('stranger');
    const r = await ssh(stranger, ['doors-vm@127.0.0.1', 'true']);
    t.equal(r.code, 255);
    t.match(r.err, /Permission denied \(publickey\)/);
  });

  await t.test('an unknown instance is refused with a clear message', async (t) => {
    const r = await ssh(registered, ['no-such-vm@127.0.0.1', 'true']);
    t.equal(r.code, 1);
    t.match(r.err, /instance_not_found: No instance "no-such-vm"/);
  });

  await t.test('a registered key whose API key lacks the shell scope is refused, audited', async (t) => {
    const reader = await cp.createKey(['instances:read'], { name: 'reader' });
    const readerSsh = keygen('reader');
    // The admin registers it: the reader key itself may not (no shell scope).
    await cp.api('POST', `/api/keys/${reader.id}/ssh-keys`, { body: { public_key: readFileSync(`${readerSsh}.pub`, 'utf8') } });
    const r = await ssh(readerSsh, ['doors-vm@127.0.0.1', 'true']);
    t.equal(r.code, 1);
    t.match(r.err, /forbidden: The API key .* lacks the scope shell/);
    const audit = await cp.api<{ items: { error_key: string; target_ids: Record<string, string> }[] }>('GET', `/api/audit?action=shell.refused&key_id=${reader.id}`);
    t.match(audit.body.items[0], { error_key: 'forbidden', target_ids: { via: 'ssh' } });
  });

  await t.test('sftp and scp are refused with a clear message', async (t) => {
    const r = await ssh(registered, ['-s', 'doors-vm@127.0.0.1', 'sftp']);
    t.not(r.code, 0);
    t.match(r.err, /file transfer \(scp, sftp\) is not available/);
    const scp = await ssh(registered, ['doors-vm@127.0.0.1', 'scp -t /tmp']);
    t.equal(scp.code, 1);
    t.match(scp.err, /file transfer/);
  });

  await t.test('ssh sessions are listed with their door and recorded', async (t) => {
    const list = await cp.api<{ items: (SessionView & { command: string | null })[] }>('GET', '/api/shell-sessions?limit=500', { key: operator.secret });
    const viaSsh = list.body.items.find((s) => s.via === 'ssh' && s.command === 'echo via-s""sh; exit 3');
    t.match(viaSsh, { exit_code: 3, end_reason: 'exit' });
    const cast = await recording(viaSsh?.id ?? '');
    t.match(cast.events.map((e) => e[2]).join(''), /via-ssh/);
  });
});

t.test('an agent killed mid-session: the operator is told, the recording is closed', { skip: prerequisite(notRoot) }, async (t) => {
  agent ??= await startAgent();
  const s = await shell();
  s.type('echo before-kill\r');
  await s.waitFor(/before-kill/);
  agent.proc.child.kill('SIGKILL');
  const exit = await s.waitExit();
  t.match(exit, { reason: 'agent_disconnected', message: /agent disconnected/ });
  const id = s.opened?.session_id ?? '';
  const row = await sessionRow(id);
  t.match(row, { end_reason: 'agent_disconnected' });
  t.ok(row?.ended_at, 'the session row is closed');
  const cast = await recording(id);
  t.match(cast.events.map((e) => e[2]).join(''), /before-kill/, 'what was recorded before is kept');
});
