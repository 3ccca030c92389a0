// /readyz for a load balancer: no key, each check named; 503 naming what failed.
import t from 'tap';
import { closeDatabase } from '../../control-plane/src/db/index.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { parsePromText } from '../helpers/prom-text.ts';
import { rawExec, rawRows, sql } from '../../control-plane/src/db/raw.ts';

interface Readiness {
  status: string;
  failed: string[];
  checks: Record<string, { ok: boolean; message?: string; pending?: number }>;
}

async function readyz(cp: TestControlPlane): Promise<{ status: number; body: Readiness; text: string; cache: string | null }> {
  const res = await fetch(`${cp.url}/readyz`);
  const text = await res.text();
  return { status: res.status, body: JSON.parse(text) as Readiness, text, cache: res.headers.get('cache-control') };
}

t.test('a running control plane is ready, without a key, every check named', async (t) => {
  const cp = await startTestControlPlane({ config: { rateLimit: { anonymousMax: 1 } } });
  t.teardown(() => cp.close());
  const r = await readyz(cp);
  t.equal(r.status, 200);
  t.same(r.body, {
    status: 'ready',
    failed: [],
    checks: { database: { ok: true }, migrations: { ok: true, pending: 0 }, agent_hub: { ok: true } },
  });
  t.equal(r.cache, 'no-store');
  for (let i = 0; i < 3; i++) t.equal((await readyz(cp)).status, 200, 'a probe every second spends no rate-limit budget');
});

t.test('a database that cannot be reached makes it not ready, naming the database', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close().catch(() => undefined));
  // The server's own connection closed under it: what every query now meets.
  closeDatabase(cp.ctx.db);
  const r = await readyz(cp);
  t.equal(r.status, 503);
  t.equal(r.body.status, 'not_ready');
  t.same(r.body.failed, ['database', 'migrations']);
  t.same(r.body.checks.database, { ok: false, message: 'the database did not answer a trivial query' });
  t.same(r.body.checks.migrations, { ok: false, message: 'the applied migrations could not be read' });
  t.same(r.body.checks.agent_hub, { ok: true }, 'the hub itself still takes connections');
  t.notMatch(r.text, cp.dataDir, 'no path is revealed');
  t.notMatch(r.text, /sqlite|connection is not open/i, 'no driver detail is revealed');

  // A scrape sees the same (rendered directly: the key check needs the database too).
  const metrics = cp.ctx.metrics;
  if (!metrics) throw new Error('no metrics');
  const s = parsePromText(await metrics.render());
  t.equal(s.value('vmkit_db_up', { dialect: cp.ctx.db.dialect }), 0);
  t.equal(s.value('vmkit_db_migrations_pending', { dialect: cp.ctx.db.dialect }), -1);

  // Shutting down with the database gone still closes every part (on PostgreSQL the hub's
  // last write used to reject the close and leave the node heartbeat running for ever).
  await cp.close();
  t.equal(cp.ctx.hub?.accepting, false, 'the close went through: the hub is closed');
});

t.test('a migration not applied makes it not ready, saying how many', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const db = cp.ctx.db;
  const table = db.dialect === 'postgres' ? sql`drizzle.__drizzle_migrations` : sql`__drizzle_migrations`;
  const [last] = await rawRows<{ hash: string; created_at: number }>(db, sql`select hash, created_at from ${table} order by created_at desc limit 1`);
  if (!last) throw new Error('no migration recorded');
  t.equal(await rawExec(db, sql`delete from ${table} where created_at = ${last.created_at}`), 1, 'the last migration is forgotten');
  const r = await readyz(cp);
  t.equal(r.status, 503);
  t.same(r.body.failed, ['migrations']);
  t.same(r.body.checks.migrations, { ok: false, pending: 1, message: '1 migration not applied' });
  await rawExec(db, sql`insert into ${table} (hash, created_at) values (${last.hash}, ${last.created_at})`);
  t.equal((await readyz(cp)).status, 200, 'ready again once it is applied');
});

t.test('a hub that stopped taking agents makes it not ready', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const hub = cp.ctx.hub;
  if (!hub) throw new Error('no hub');
  t.equal(hub.accepting, true);
  await hub.close();
  const r = await readyz(cp);
  t.equal(r.status, 503);
  t.same(r.body.failed, ['agent_hub']);
  t.same(r.body.checks.agent_hub, { ok: false, message: 'the agent hub is not taking connections (starting or shutting down)' });
  const m = await fetch(`${cp.url}/metrics`, { headers: { authorization: `Bearer ${cp.adminKey}` } });
  t.equal(parsePromText(await m.text()).value('vmkit_agent_handshake_refusals_total', { reason: 'shutting_down' }), 0, 'no agent was refused yet');
});
