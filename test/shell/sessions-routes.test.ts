import { join } from 'node:path';
import t from 'tap';
import { newId } from '@vmkit/protocol';
import { endShellSession, insertShellSession } from '../../control-plane/src/db/shell-sessions.ts';
import { AsciicastWriter, parseAsciicast } from '../../control-plane/src/shell/recording.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';

// Session rows and recordings as the session service leaves them; the routes only read.
const cp = await startTestControlPlane();
t.teardown(() => cp.close());
const inst = (await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: 'rec-vm' } })).body.id;
const alice = await cp.createKey(['shell'], { name: 'alice' });
const bob = await cp.createKey(['shell'], { name: 'bob' });

async function session(keyId: string, opts: { recorded?: boolean; command?: string } = {}): Promise<string> {
  const id = newId('shellSession');
  let recordingPath: string | null = null;
  if (opts.recorded !== false) {
    const w = new AsciicastWriter(join(cp.dataDir, 'recordings', `${id}.cast`), { width: 80, height: 24, timestamp: 1_700_000_000, term: 'xterm', title: 'rec-vm' });
    w.output(Buffer.from(`output of ${id}\r\n`));
    w.close();
    recordingPath = w.path;
  }
  await insertShellSession(cp.ctx.db, { id, workspaceId: cp.workspaceId, instanceId: inst, keyId, via: 'ssh', recordingPath, command: opts.command ?? null, runAs: null, startedAt: 1_700_000_000_000 });
  await endShellSession(cp.ctx.db, id, { exitCode: 3, exitSignal: null, bytesIn: 12, bytesOut: 345, endReason: 'exit', endedAt: 1_700_000_002_500 });
  return id;
}

const aliceSession = await session(alice.id, { command: 'uptime' });
const bobSession = await session(bob.id);
const unrecorded = await session(alice.id, { recorded: false });

type View = Record<string, unknown> & { id: string };

t.test('an operator lists their own sessions: who, instance, when, duration, exit code, bytes, which door', async (t) => {
  const res = await cp.api<{ items: View[] }>('GET', '/api/shell-sessions', { key: alice.secret });
  t.equal(res.status, 200);
  t.same(res.body.items.map((s) => s.id), [unrecorded, aliceSession]);
  t.match(res.body.items[1], {
    id: aliceSession,
    instance_id: inst,
    key_id: alice.id,
    key_name: 'alice',
    via: 'ssh',
    command: 'uptime',
    started_at: '2023-11-14T22:13:20.000Z',
    ended_at: '2023-11-14T22:13:22.500Z',
    duration_ms: 2500,
    exit_code: 3,
    end_reason: 'exit',
    bytes_in: 12,
    bytes_out: 345,
    recording_url: `/api/shell-sessions/${aliceSession}/recording`,
  });
  t.equal(res.body.items[0]?.recording_url, null);
});

t.test("one operator never sees another's session, nor its recording", async (t) => {
  const list = await cp.api<{ items: View[] }>('GET', '/api/shell-sessions', { key: bob.secret });
  t.same(list.body.items.map((s) => s.id), [bobSession]);
  const rec = await cp.api<{ error: string }>('GET', `/api/shell-sessions/${aliceSession}/recording`, { key: bob.secret });
  t.equal(rec.status, 404);
  t.equal(rec.body.error, 'shell_session_not_found');
});

t.test('the admin key sees every session of the workspace', async (t) => {
  const list = await cp.api<{ items: View[] }>('GET', '/api/shell-sessions');
  t.same(list.body.items.map((s) => s.id).sort(), [aliceSession, bobSession, unrecorded].sort());
});

t.test("another workspace sees none of them", async (t) => {
  const other = await cp.createWorkspace('sessions-other');
  const list = await cp.api<{ items: View[] }>('GET', '/api/shell-sessions', { key: other.adminKey });
  t.same(list.body.items, []);
  const rec = await cp.api<{ error: string }>('GET', `/api/shell-sessions/${aliceSession}/recording`, { key: other.adminKey });
  t.equal(rec.body.error, 'shell_session_not_found');
});

t.test('the recording downloads as asciicast v2 holding the output', async (t) => {
  const res = await fetch(`${cp.url}/api/shell-sessions/${aliceSession}/recording`, { headers: { authorization: `Bearer ${alice.secret}` } });
  t.equal(res.status, 200);
  t.equal(res.headers.get('content-type'), 'application/x-asciicast');
  const cast = parseAsciicast(await res.text());
  t.equal(cast.header.version, 2);
  t.match(cast.events.map((e) => e[2]).join(''), `output of ${aliceSession}`);
});

t.test('a session without a recording answers recording_not_found', async (t) => {
  const res = await cp.api<{ error: string }>('GET', `/api/shell-sessions/${unrecorded}/recording`, { key: alice.secret });
  t.equal(res.status, 404);
  t.equal(res.body.error, 'recording_not_found');
});

t.test('a key without the shell scope cannot list sessions', async (t) => {
  const reader = await cp.createKey(['instances:read']);
  const res = await cp.api<{ error: string }>('GET', '/api/shell-sessions', { key: reader.secret });
  t.equal(res.status, 403);
});

t.test('pages: limit and next_cursor walk the list', async (t) => {
  const first = await cp.api<{ items: View[]; next_cursor: string | null }>('GET', '/api/shell-sessions?limit=2');
  t.equal(first.body.items.length, 2);
  t.ok(first.body.next_cursor);
  const second = await cp.api<{ items: View[]; next_cursor: string | null }>('GET', `/api/shell-sessions?limit=2&cursor=${first.body.next_cursor ?? ''}`);
  t.equal(second.body.items.length, 1);
  t.equal(second.body.next_cursor, null);
});
