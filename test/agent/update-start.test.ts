import { existsSync, mkdirSync, mkdtempSync, readFileSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { newId } from '@vmkit/protocol';
import { createLogger } from '../../vmkit-agent/src/log.ts';
import { installLayoutOf, pruneVersions, switchCurrent } from '../../vmkit-agent/src/update/layout.ts';
import { readMarker, writeMarker } from '../../vmkit-agent/src/update/marker.ts';
import type { UpdateMarker } from '../../vmkit-agent/src/update/marker.ts';
import { MAX_STARTS, confirmUpdate, updateAtStart } from '../../vmkit-agent/src/update/start.ts';

/**
 * What an agent decides at start about an update in flight (vmkit-agent/src/update/start.ts),
 * on real folders and links: probation, rollback when the window ended or the new
 * version keeps restarting, the report of a rollback, a crash between the steps.
 * test/agent/update.test.ts runs the whole thing with real executables.
 */

const quiet = createLogger('error', () => undefined);
const NOW = 1_800_000_000_000;

function install(t: Test, versions: string[], current: string) {
  const root = mkdtempSync(join(tmpdir(), 'vmkit-layout-'));
  t.teardown(() => rmSync(root, { recursive: true, force: true }));
  for (const v of versions) {
    mkdirSync(join(root, 'versions', v), { recursive: true });
    writeFileSync(join(root, 'versions', v, 'vmkit-agent'), `#!/bin/sh\necho ${v}\n`, { mode: 0o755 });
  }
  symlinkSync(join('versions', current), join(root, 'current'));
  const state = join(root, 'state');
  mkdirSync(state, { mode: 0o700 });
  return { root, marker: join(state, 'update.json'), link: () => readlinkSync(join(root, 'current')) };
}

const pending = (root: string, over: Partial<UpdateMarker> = {}): UpdateMarker => ({
  version: 1,
  command_id: newId('command'),
  from_version: '1.0.0',
  to_version: '1.1.0',
  root,
  switched_at: NOW - 1_000,
  confirm_by: NOW + 60_000,
  starts: 0,
  state: 'pending',
  ...over,
});

t.test('no marker, nothing to decide', async (t) => {
  const i = install(t, ['1.0.0'], '1.0.0');
  t.same(await updateAtStart(i.marker, '1.0.0', quiet, NOW), { kind: 'none' });
});

t.test('the new version inside its window is on probation, and its starts are counted', async (t) => {
  const i = install(t, ['1.0.0', '1.1.0'], '1.1.0');
  await writeMarker(i.marker, pending(i.root));
  const d = await updateAtStart(i.marker, '1.1.0', quiet, NOW);
  t.equal(d.kind, 'confirming');
  t.equal((await readMarker(i.marker))?.starts, 1);
  t.equal(i.link(), 'versions/1.1.0', 'nothing switched');
});

t.test('the new version past its window switches back and asks for a restart; the old one reports', async (t) => {
  const i = install(t, ['1.0.0', '1.1.0'], '1.1.0');
  const m = pending(i.root, { confirm_by: NOW - 1 });
  await writeMarker(i.marker, m);
  const d = await updateAtStart(i.marker, '1.1.0', quiet, NOW);
  t.equal(d.kind, 'restart');
  t.equal(i.link(), 'versions/1.0.0', 'current points back');
  t.equal((await readMarker(i.marker))?.state, 'rolled_back');
  const old = await updateAtStart(i.marker, '1.0.0', quiet, NOW);
  if (old.kind !== 'report') throw new Error(`expected report, got ${old.kind}`);
  t.equal(old.marker.command_id, m.command_id);
  t.same(old.outcome, {
    status: 'failed',
    error: { key: 'update_rolled_back', message: 'vmkit-agent 1.1.0 was rolled back to 1.0.0: it did not connect within 999 ms' },
    output: { version: '1.0.0', attempted_version: '1.1.0', rolled_back: true },
  });
});

t.test(`a new version that started ${MAX_STARTS} times without connecting is rolled back inside its window`, async (t) => {
  const i = install(t, ['1.0.0', '1.1.0'], '1.1.0');
  await writeMarker(i.marker, pending(i.root, { starts: MAX_STARTS }));
  t.equal((await updateAtStart(i.marker, '1.1.0', quiet, NOW)).kind, 'restart');
  t.equal(i.link(), 'versions/1.0.0');
  t.match((await readMarker(i.marker))?.reason, /started 5 times without connecting/);
});

t.test('a crash between recording the rollback and switching back is finished at the next start', async (t) => {
  const i = install(t, ['1.0.0', '1.1.0'], '1.1.0');
  await writeMarker(i.marker, pending(i.root, { state: 'rolled_back', reason: 'x' }));
  t.equal((await updateAtStart(i.marker, '1.1.0', quiet, NOW)).kind, 'restart');
  t.equal(i.link(), 'versions/1.0.0');
});

t.test('the old version starting with a pending marker (the switch never happened) reports a rollback', async (t) => {
  const i = install(t, ['1.0.0', '1.1.0'], '1.0.0');
  await writeMarker(i.marker, pending(i.root));
  const d = await updateAtStart(i.marker, '1.0.0', quiet, NOW);
  if (d.kind !== 'report') throw new Error(`expected report, got ${d.kind}`);
  t.match(d.outcome.status === 'failed' ? d.outcome.error.message : '', /the agent started as 1\.0\.0 again before 1\.1\.0 ever ran/);
});

t.test('a third version with a marker reports the command interrupted', async (t) => {
  const i = install(t, ['1.0.0', '1.1.0', '2.0.0'], '2.0.0');
  await writeMarker(i.marker, pending(i.root));
  const d = await updateAtStart(i.marker, '2.0.0', quiet, NOW);
  t.equal(d.kind, 'report');
  if (d.kind === 'report') t.equal(d.outcome.status === 'failed' ? d.outcome.error.key : '', 'command_interrupted');
});

t.test('a rollback whose previous version is gone fails loudly instead of pointing current at nothing', async (t) => {
  const i = install(t, ['1.1.0'], '1.1.0');
  await writeMarker(i.marker, pending(i.root, { confirm_by: NOW - 1 }));
  await t.rejects(updateAtStart(i.marker, '1.1.0', quiet, NOW), /cannot roll back: .*1\.0\.0\/vmkit-agent is gone/);
  t.equal(i.link(), 'versions/1.1.0');
});

t.test('a confirmed update keeps the new and the previous version and prunes the rest', async (t) => {
  const i = install(t, ['0.9.0', '1.0.0', '1.1.0'], '1.1.0');
  mkdirSync(join(i.root, 'versions', '.1.2.0.123.456'));
  const out = await confirmUpdate(i.marker, pending(i.root, { starts: 2 }), quiet);
  t.same(out, { status: 'succeeded', output: { version: '1.1.0', previous_version: '1.0.0', changed: true, starts: 2, pruned: ['.1.2.0.123.456', '0.9.0'] } });
  t.ok(existsSync(join(i.root, 'versions', '1.0.0')));
  t.notOk(existsSync(join(i.root, 'versions', '0.9.0')));
});

t.test('an invalid marker is an error, not an update silently forgotten', async (t) => {
  const i = install(t, ['1.0.0'], '1.0.0');
  writeFileSync(i.marker, JSON.stringify({ version: 1, command_id: 'nope' }));
  await t.rejects(updateAtStart(i.marker, '1.0.0', quiet, NOW), /update marker .* is invalid/);
});

t.test('the install layout is recognised only as install-agent.sh makes it', async (t) => {
  const i = install(t, ['1.0.0', '1.1.0'], '1.0.0');
  const exe = join(i.root, 'versions', '1.0.0', 'vmkit-agent');
  const ok = await installLayoutOf(exe, '1.0.0');
  t.ok(ok.ok);
  const wrongVersion = await installLayoutOf(exe, '1.1.0');
  t.match(wrongVersion.ok ? '' : wrongVersion.reason, /not from <root>\/versions\/1\.1\.0\/vmkit-agent/);
  const notCurrent = await installLayoutOf(join(i.root, 'versions', '1.1.0', 'vmkit-agent'), '1.1.0');
  t.match(notCurrent.ok ? '' : notCurrent.reason, /does not point at .*1\.1\.0, the version running/);
  const tsx = await installLayoutOf(process.execPath, '1.0.0');
  t.notOk(tsx.ok, 'node running sources is not an installed release');
  rmSync(join(i.root, 'current'));
  writeFileSync(join(i.root, 'current'), 'x');
  const plain = await installLayoutOf(exe, '1.0.0');
  t.match(plain.ok ? '' : plain.reason, /is not a symbolic link/);
});

t.test('switching current is one rename to a relative link; pruning keeps what it is told', async (t) => {
  const i = install(t, ['1.0.0', '1.1.0'], '1.0.0');
  const layout = { root: i.root, versionsDir: join(i.root, 'versions'), current: join(i.root, 'current') };
  await switchCurrent(layout, '1.1.0');
  t.equal(i.link(), 'versions/1.1.0');
  t.equal(readFileSync(join(i.root, 'current', 'vmkit-agent'), 'utf8'), '#!/bin/sh\necho 1.1.0\n');
  t.same(await pruneVersions(layout, ['1.1.0']), ['1.0.0']);
});
