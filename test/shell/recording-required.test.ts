import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, rmdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { enrollRealAgent, plainBashShell, waitAgentState } from '../helpers/real-agent.ts';
import { openShell } from '../helpers/shell-client.ts';
import type { TestShell } from '../helpers/shell-client.ts';

/**
 * `--shell-require-recording true` (fail closed): a session whose recording cannot be
 * written is refused at open, and one whose recording stops being writable mid-session
 * is closed; both say why under the key recording_failed and are on the audit trail.
 * Without the setting, both run on unrecorded. Real agent, real PTYs; the recording
 * directory is made unusable the ways a disk fails: a file where the directory should
 * be (root ignores permission bits), and a full file system (a 64 kB tmpfs).
 */

function cannotMountTmpfs(): string | false {
  if (process.getuid?.() !== 0) return 'needs root: the agent runs shells as root, and the test mounts a tmpfs';
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-mount-probe-'));
  try {
    const r = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', dir]);
    if (r.status !== 0) return `cannot mount a tmpfs here: ${r.stderr.toString().trim()}`;
    spawnSync('umount', [dir]);
    return false;
  } finally {
    rmdirSync(dir);
  }
}

if (fileNeeds(cannotMountTmpfs())) {
  const cp = await startTestControlPlane({
    config: { shell: { idleTimeoutMs: 20 * 60_000, maxSessionMs: 3_600_000, recordInput: false, requireRecording: true, keyCheckMs: 60_000 } },
  });
  t.teardown(() => cp.close());
  const recordings = join(cp.dataDir, 'recordings');

  const agent = await enrollRealAgent(t, cp, { name: 'recorded-vm' });
  agent.patchConfig({ shell: { default_user: 'root', allow_root: true, max_sessions: 8, program: plainBashShell() } });
  agent.start();
  await waitAgentState(cp, agent.instanceId, 'connected', 120_000);
  const operator = await cp.createKey(['shell'], { name: 'operator' });

  const setRequired = (on: boolean) => {
    cp.ctx.config.shell.requireRecording = on;
  };
  type Audit = { action: string; status: number; error_key: string | null; target_ids: Record<string, string> };
  const audit = async (action: string) =>
    (await cp.api<{ items: Audit[] }>('GET', `/api/audit?action=${action}&key_id=${operator.id}&limit=500`)).body.items;
  type Row = { id: string; end_reason: string | null; recording_url: string | null };
  const row = async (id: string) => (await cp.api<{ items: Row[] }>('GET', '/api/shell-sessions?limit=500')).body.items.find((s) => s.id === id);
  async function open(): Promise<TestShell> {
    const r = await openShell(cp.url, 'recorded-vm', { key: operator.secret });
    if ('refused' in r) throw new Error(`refused: ${JSON.stringify(r.refused.body)}`);
    await r.session.until(() => r.session.opened, 'the opened message');
    return r.session;
  }

  t.test('when the recording cannot be created', async (t) => {
    // A file where the recordings directory should be: nothing can be created under it.
    writeFileSync(recordings, 'not a directory');
    t.teardown(() => rmSync(recordings, { force: true }));

    await t.test('a required recording: the session is refused with recording_failed, audited', async (t) => {
      setRequired(true);
      const r = await openShell(cp.url, 'recorded-vm', { key: operator.secret });
      if (!('refused' in r)) throw new Error('the shell opened');
      t.equal(r.refused.status, 503);
      t.same(r.refused.body, {
        error: 'recording_failed',
        message: 'The recording of this session cannot be written, and this control plane requires every shell session to be recorded.',
      });
      t.notMatch(r.refused.body.message, cp.dataDir, 'the server path is not shown to the operator');
      t.match((await audit('shell.refused'))[0], { status: 503, error_key: 'recording_failed', target_ids: { instance_id: agent.instanceId, via: 'websocket' } });
    });

    await t.test('not required: the session runs unrecorded', async (t) => {
      setRequired(false);
      const s = await open();
      s.type('echo unrec""orded\r');
      await s.waitFor(/unrecorded/);
      s.type('exit\r');
      t.match(await s.waitExit(), { code: 0, reason: 'exit' });
      t.match(await row(s.opened?.session_id ?? ''), { end_reason: 'exit', recording_url: null });
    });
  });

  t.test('when the recording stops being writable mid-session (a full disk)', async (t) => {
    mkdirSync(recordings, { mode: 0o700 });
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=64k,mode=0700', 'tmpfs', recordings]);
    t.equal(mounted.status, 0, mounted.stderr.toString());
    t.teardown(() => {
      spawnSync('umount', [recordings]);
      rmSync(recordings, { recursive: true, force: true });
    });
    const emptyDisk = () => {
      for (const f of readdirSync(recordings)) rmSync(join(recordings, f));
    };

    await t.test('a required recording: the session is closed with recording_failed, the operator told, audited', async (t) => {
      setRequired(true);
      const s = await open();
      s.type('echo bef""ore-full\r');
      await s.waitFor(/before-full/);
      // About 1 MB of output: the 64 kB file system fills up under the recording.
      s.type("head -c 1000000 /dev/zero | tr '\\0' x; echo\r");
      const exit = await s.waitExit();
      t.match(exit, { reason: 'recording_failed', message: 'the session recording could not be written, and sessions must be recorded' });
      await s.waitClosed();
      const id = s.opened?.session_id ?? '';
      t.match(await row(id), { end_reason: 'recording_failed' });
      const closed = (await audit('shell.close')).find((a) => a.target_ids.session_id === id);
      t.match(closed, { status: 503, error_key: 'recording_failed', target_ids: { end_reason: 'recording_failed', via: 'websocket' } });
    });

    await t.test('not required: the session goes on unrecorded', async (t) => {
      emptyDisk();
      setRequired(false);
      const s = await open();
      s.type(`head -c 1000000 /dev/zero | tr '\\0' x; echo; echo aft""er-full\r`);
      await s.waitFor(/after-full/);
      s.type('exit 4\r');
      t.match(await s.waitExit(), { code: 4, reason: 'exit' });
      t.match(await row(s.opened?.session_id ?? ''), { end_reason: 'exit' });
    });
  });
}
