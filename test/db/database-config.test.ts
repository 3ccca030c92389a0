/**
 * How a user picks the database: --database-url / VMKIT_DATABASE_URL select PostgreSQL,
 * nothing selects SQLite in the data dir, anything else is refused without echoing a
 * password; the server CLI's `workspaces create` writes to the database so chosen.
 */
import t from 'tap';
import { mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runServerCli } from '../../control-plane/src/cli/server-cli.ts';
import { ConfigError, loadConfig } from '../../control-plane/src/config.ts';
import { closeDatabase, isPostgresUrl, openDatabase, redactDatabaseUrl } from '../../control-plane/src/db/index.ts';
import { listWorkspaces } from '../../control-plane/src/db/workspaces.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';
import { prerequisite } from '../helpers/prereq.ts';

t.test('the database URL comes from the flag, then the environment; unset means SQLite', async (t) => {
  t.equal(loadConfig([], {}).databaseUrl, undefined);
  t.equal(loadConfig([], { VMKIT_DATABASE_URL: 'postgres://a@h/db' }).databaseUrl, 'postgres://a@h/db');
  t.equal(loadConfig(['--database-url', 'postgresql://b@h/db'], { VMKIT_DATABASE_URL: 'postgres://a@h/db' }).databaseUrl, 'postgresql://b@h/db');
  t.equal(loadConfig([], { VMKIT_DATABASE_URL: '' }).databaseUrl, undefined, 'an empty variable is unset');
});

t.test('a URL of another kind is refused, naming only its scheme', async (t) => {
  const err = t.throws(() => loadConfig(['--database-url', 'mysql://root:hunter2@h/db'], {}));
  t.type(err, ConfigError);
  t.match((err as Error).message, /postgres:\/\/ or postgresql:\/\//);
  t.notMatch((err as Error).message, /hunter2/, 'the password is not repeated');
});

t.test('URLs are recognised, and logged without their password', async (t) => {
  t.ok(isPostgresUrl('postgres://x@h/d'));
  t.ok(isPostgresUrl('POSTGRESQL://x@h/d'));
  t.notOk(isPostgresUrl('sqlite:./data'));
  t.equal(redactDatabaseUrl('postgres://vmkit:s3cret@db:5432/vmkit?sslmode=require'), 'postgres://vmkit:***@db:5432/vmkit?sslmode=require');
  t.equal(redactDatabaseUrl('postgres://vmkit@db/vmkit'), 'postgres://vmkit@db/vmkit');
  t.equal(redactDatabaseUrl('not a url'), '(unparsable URL)');
});

t.test('`workspaces create --database-url` writes to PostgreSQL, not to a SQLite file', { skip: prerequisite(postgresMissing()) }, async (t) => {
  const target = await createTestDatabase();
  t.teardown(() => target.drop());
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-dbcfg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  let out = '';
  const io = { stdout: (s: string) => (out += s), stderr: (s: string) => (out += s), env: {} };
  const code = await runServerCli(['workspaces', 'create', 'on-pg', '--data-dir', dir, '--database-url', target.url], io);
  t.equal(code, 0, out);
  t.match(out, /Created workspace on-pg/);
  t.notOk(existsSync(join(dir, 'vmkit.sqlite')), 'no SQLite file was made');
  const db = await openDatabase({ dataDir: dir, databaseUrl: target.url });
  t.teardown(() => closeDatabase(db));
  t.equal(db.dialect, 'postgres');
  t.same((await listWorkspaces(db)).map((w) => w.name), ['on-pg']);
});

t.test('an unreachable PostgreSQL fails the start with the driver\'s reason', { skip: prerequisite(postgresMissing()) }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-dbcfg-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  await t.rejects(openDatabase({ dataDir: dir, databaseUrl: `postgres://nobody@localhost/none?host=${encodeURIComponent(dir)}` }), /ENOENT|connect/);
});
