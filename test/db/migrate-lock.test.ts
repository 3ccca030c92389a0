/**
 * Several control planes starting together on one empty PostgreSQL database migrate it
 * once: each takes pg_advisory_lock before looking, so exactly one applies the
 * migrations and the others find nothing left to do (without the lock they would race
 * on CREATE TABLE and on the migrations table).
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { closeDatabase, openDatabase } from '../../control-plane/src/db/index.ts';
import { PG_MIGRATIONS_DIR } from '../../control-plane/src/db/postgres.ts';
import { rawExec, rawRows, sql } from '../../control-plane/src/db/raw.ts';
import { databaseReadiness } from '../../control-plane/src/db/readiness.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';
import { fileNeeds } from '../helpers/prereq.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const PROCESSES = 3;

if (fileNeeds(postgresMissing())) {
  t.test('processes that start together on an empty database migrate it exactly once', async (t) => {
    const target = await createTestDatabase();
    t.teardown(() => target.drop());
    const journal = JSON.parse(readFileSync(join(PG_MIGRATIONS_DIR, 'meta', '_journal.json'), 'utf8')) as { entries: unknown[] };

    const children = Array.from({ length: PROCESSES }, () => {
      const child = spawn(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'migrate-child.ts'), target.url], {
        cwd: ROOT,
        stdio: ['pipe', 'pipe', 'pipe'],
      });
      let stderr = '';
      child.stderr.on('data', (b: Buffer) => (stderr += b.toString('utf8')));
      const lines = createInterface({ input: child.stdout });
      const next = () => new Promise<string>((resolve) => lines.once('line', resolve));
      const exited = new Promise<number | null>((resolve) => child.on('exit', resolve));
      return { child, next, exited, stderr: () => stderr };
    });
    // Everyone connected first, then one "go" to all: they reach the lock together.
    t.same(await Promise.all(children.map((c) => c.next())), Array(PROCESSES).fill('ready'));
    const answers = children.map((c) => c.next());
    for (const c of children) c.child.stdin.write('go\n');
    const applied = (await Promise.all(answers)).map((line) => Number(/^applied (\d+)$/.exec(line)?.[1] ?? NaN));
    const codes = await Promise.all(children.map((c) => c.exited));
    t.same(codes, Array(PROCESSES).fill(0), `every process started cleanly ${children.map((c) => c.stderr()).join('')}`);
    t.same(
      applied.filter((n) => n > 0),
      [journal.entries.length],
      `one process applied all ${journal.entries.length} migration(s), the others none (${applied.join(', ')})`,
    );

    const db = await openDatabase({ dataDir: '', databaseUrl: target.url });
    t.teardown(() => closeDatabase(db));
    const [row] = await rawRows<{ n: number }>(db, sql`SELECT count(*) AS n FROM drizzle.__drizzle_migrations`);
    t.equal(row?.n, journal.entries.length, 'each migration is recorded once');
    t.match(await databaseReadiness(db), { ready: true, migrationsApplied: true });
  });

  t.test('a database missing a migration this build ships is reachable but not ready', async (t) => {
    const target = await createTestDatabase();
    t.teardown(() => target.drop());
    const db = await openDatabase({ dataDir: '', databaseUrl: target.url });
    t.teardown(() => closeDatabase(db));
    await rawExec(db, sql`DELETE FROM drizzle.__drizzle_migrations`);
    t.match(await databaseReadiness(db), { ready: false, reachable: true, migrationsApplied: false, reason: /lacks migrations/ });
  });
}
