/**
 * The first start's workspace: several control planes starting together on one empty
 * database make one default workspace and one admin key between them, and only the
 * process that made it writes admin.key. Each "process" here is its own database
 * handle (its own pool, so its own PostgreSQL connections; its own SQLite connection).
 */
import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ADMIN_KEY_FILE, bootstrapIfEmpty } from '../../control-plane/src/auth/bootstrap.ts';
import { hashApiKey } from '../../control-plane/src/auth/api-keys.ts';
import { closeDatabase, openDatabase } from '../../control-plane/src/db/index.ts';
import type { Db } from '../../control-plane/src/db/index.ts';
import { rawRows, sql } from '../../control-plane/src/db/raw.ts';
import { createTestDatabase, testDialects } from '../helpers/postgres.ts';
import { prerequisite } from '../helpers/prereq.ts';

const STARTS = 4;

for (const { dialect, skip } of testDialects()) {
  t.test(`${dialect}: control planes starting together on an empty database make one workspace`, { skip: prerequisite(skip) }, async (t) => {
    const shared = mkdtempSync(join(tmpdir(), 'vmk-first-ws-'));
    t.teardown(() => rmSync(shared, { recursive: true, force: true }));
    let databaseUrl: string | undefined;
    if (dialect === 'postgres') {
      const target = await createTestDatabase();
      t.teardown(() => target.drop());
      databaseUrl = target.url;
    }
    // Migrated once first (that race is migrate-lock's), then one handle per process.
    await closeDatabase(await openDatabase({ dataDir: shared, databaseUrl }));
    const handles: Db[] = [];
    for (let i = 0; i < STARTS; i++) handles.push(await openDatabase({ dataDir: shared, databaseUrl }));
    t.teardown(() => Promise.all(handles.map((h) => closeDatabase(h))));
    const dataDirs = handles.map((_, i) => mkdtempSync(join(shared, `node-${i}-`)));

    const results = await Promise.all(handles.map((db, i) => bootstrapIfEmpty(db, dataDirs[i] ?? '')));
    const made = results.flatMap((r, i) => (r === null ? [] : [{ r, dir: dataDirs[i] ?? '' }]));
    t.equal(made.length, 1, 'one start made the workspace, the others found it');

    const db = handles[0] as Db;
    const workspaces = await rawRows<{ id: string; name: string }>(db, sql`SELECT id, name FROM workspaces`);
    t.same(workspaces.map((w) => w.name), ['default']);
    const keys = await rawRows<{ workspace_id: string; hash: string }>(db, sql`SELECT workspace_id, hash FROM api_keys`);
    t.equal(keys.length, 1, 'one admin key');
    const first = made[0];
    if (first === undefined) return;
    t.equal(keys[0]?.workspace_id, first.r.workspaceId);
    t.equal(keys[0]?.hash, hashApiKey(first.r.adminKey), 'the stored key is the one handed out');
    const file = join(first.dir, ADMIN_KEY_FILE);
    t.equal(readFileSync(file, 'utf8'), `${first.r.adminKey}\n`);
    t.equal(statSync(file).mode & 0o777, 0o600);
    t.same(
      dataDirs.filter((d) => existsSync(join(d, ADMIN_KEY_FILE))),
      [first.dir],
      'only the start that made the key wrote admin.key',
    );

    t.equal(await bootstrapIfEmpty(db, dataDirs[1] ?? ''), null, 'a later start makes nothing');
    t.equal((await rawRows(db, sql`SELECT id FROM workspaces`)).length, 1);
  });
}
