import t from 'tap';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { closeDatabase, openDatabase } from '../../control-plane/src/db/index.ts';
import { createInstance, freeInstanceName } from '../../control-plane/src/db/instances.ts';
import { createWorkspace } from '../../control-plane/src/db/workspaces.ts';
import { rawExec, rawRows, sql } from '../../control-plane/src/db/raw.ts';

interface Body {
  id: string;
  name: string;
  provider: string;
  error: string;
  message: string;
}

t.test('instance names are unique per workspace', async (t) => {
  const cp = await startTestControlPlane({ config: { rateLimit: { max: 1000 } } });
  t.teardown(() => cp.close());
  const create = (name: string, key?: string) => cp.api<Body>('POST', '/api/instances', { body: { name, provider: 'manual' }, ...(key && { key }) });

  t.test('a second live instance of the same name (any case) is refused with 409 instance_name_taken', async (t) => {
    t.equal((await create('web-1')).status, 201);
    const again = await create('WEB-1');
    t.equal(again.status, 409);
    t.equal(again.body.error, 'instance_name_taken');
    t.equal(again.body.message, 'An instance named "WEB-1" already exists in this workspace; choose another name or delete that one.');
    const list = await cp.api<{ items: Body[] }>('GET', '/api/instances');
    t.equal(list.body.items.filter((i) => i.name.toLowerCase() === 'web-1').length, 1, 'nothing was added');
  });

  t.test('a destroyed instance frees its name', async (t) => {
    const first = await create('tmp-1');
    t.equal((await cp.api('DELETE', `/api/instances/${first.body.id}`)).status, 200);
    t.equal((await create('tmp-1')).status, 201);
  });

  t.test('another workspace may use the same name', async (t) => {
    const other = await cp.createWorkspace('other');
    t.equal((await create('web-1', other.adminKey)).status, 201);
  });

  t.test('leaving out provider makes a manual instance (the documented default)', async (t) => {
    const res = await cp.api<Body>('POST', '/api/instances', { body: { name: 'by-hand' } });
    t.equal(res.status, 201);
    t.equal(res.body.provider, 'manual');
  });

  t.test("a deploy's VM takes the next free name when its natural one is held", async (t) => {
    t.equal(await freeInstanceName(cp.ctx.db, cp.workspaceId, 'my-app-production'), 'my-app-production');
    t.equal((await create('my-app-production')).status, 201);
    t.equal((await create('my-app-production-2')).status, 201);
    t.equal(await freeInstanceName(cp.ctx.db, cp.workspaceId, 'MY-APP-production'), 'MY-APP-production-3');
    t.equal(await freeInstanceName(cp.ctx.db, cp.workspaceId, 'x'.repeat(63)).then((n) => n.length), 63, 'a long name stays a DNS label');
  });
});

t.test('the SQLite migration renames duplicates an older database holds, then builds the index', async (t) => {
  const db = await openDatabase(':memory:');
  t.teardown(() => closeDatabase(db));
  // As before the rule: no index yet, two live "web" and a destroyed one.
  await rawExec(db, sql`DROP INDEX instances_name_per_workspace`);
  const ws = await createWorkspace(db, 'old');
  const a = await createInstance(db, { workspaceId: ws.id, name: 'web', provider: 'manual', status: 'running' }, 1000);
  const b = await createInstance(db, { workspaceId: ws.id, name: 'WEB', provider: 'manual', status: 'running' }, 2000);
  const c = await createInstance(db, { workspaceId: ws.id, name: 'web', provider: 'manual', status: 'destroyed' }, 3000);
  const migration = readFileSync(join(import.meta.dirname, '../../control-plane/drizzle/0003_instance_names.sql'), 'utf8');
  for (const statement of migration.split('--> statement-breakpoint')) await rawExec(db, sql.raw(statement));
  const names = Object.fromEntries((await rawRows<{ id: string; name: string }>(db, sql`SELECT id, name FROM instances`)).map((r) => [r.id, r.name]));
  t.equal(names[a.id], 'web', 'the oldest keeps its name');
  t.equal(names[b.id], `WEB-${b.id.slice(-7)}`, 'the younger gets its id tail');
  t.equal(names[c.id], 'web', 'a destroyed one is left alone');
  await t.rejects(
    rawExec(db, sql`INSERT INTO instances (id, workspace_id, name, provider, status, created_at, updated_at) VALUES ('inst_x', ${ws.id}, 'Web', 'manual', 'running', 1, 1)`),
    /UNIQUE/,
  );
});
