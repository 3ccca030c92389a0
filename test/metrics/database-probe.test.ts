// The database interface a PostgreSQL data layer implements: its pool and LISTEN/NOTIFY
// figures become series, and a bus that stopped listening makes the process not ready.
import t from 'tap';
import type { DatabaseProbe, NotifyStats } from '../../control-plane/src/metrics/database.ts';
import { ControlPlaneMetrics } from '../../control-plane/src/metrics/metrics.ts';
import { checkReadiness } from '../../control-plane/src/metrics/readiness.ts';
import { parsePromText } from '../helpers/prom-text.ts';

function pooledProbe(notify: NotifyStats): DatabaseProbe {
  return {
    dialect: 'postgres',
    ping: () => Promise.resolve(),
    pendingMigrations: () => Promise.resolve(0),
    pool: () => ({ total: 7, idle: 3, waiting: 2, max: 10 }),
    notify: () => notify,
  };
}

t.test('pool and NOTIFY figures are reported where the data layer has them', async (t) => {
  const notify = { listening: true, reconnects: 2, received: 40 };
  const metrics = new ControlPlaneMetrics('cp-pg', { database: pooledProbe(notify), hub: () => undefined, shellSessionsOpen: () => undefined });
  const s = parsePromText(await metrics.render());
  const pg = { dialect: 'postgres', node_id: 'cp-pg' };
  t.equal(s.value('vmkit_db_pool_connections', { ...pg, state: 'idle' }), 3);
  t.equal(s.value('vmkit_db_pool_connections', { ...pg, state: 'in_use' }), 4);
  t.equal(s.value('vmkit_db_pool_connections', { ...pg, state: 'waiting' }), 2);
  t.equal(s.value('vmkit_db_pool_connections', { ...pg, state: 'max' }), 10);
  t.equal(s.value('vmkit_db_notify_listening', pg), 1);
  t.equal(s.value('vmkit_db_notify_reconnects_total', pg), 2);
  t.equal(s.value('vmkit_db_notifications_received_total', pg), 40);
  t.equal(s.types.get('vmkit_db_notify_reconnects_total'), 'counter');
  t.equal(s.value('vmkit_agents_connected'), 0, 'no hub yet reads as none connected');
  notify.listening = false;
  notify.reconnects = 3;
  const again = parsePromText(await metrics.render());
  t.equal(again.value('vmkit_db_notify_listening', pg), 0);
  t.equal(again.value('vmkit_db_notify_reconnects_total', pg), 3);
});

t.test('a command bus that is not listening makes the process not ready', async (t) => {
  const probe = pooledProbe({ listening: false, reconnects: 1, received: 0 });
  const r = await checkReadiness({ database: probe, hubAccepting: () => true });
  t.equal(r.ready, false);
  t.same(r.checks.agent_hub, { ok: false, message: 'the command bus is not listening for notifications' });
  t.same((await checkReadiness({ database: probe, hubAccepting: () => undefined })).checks.agent_hub, { ok: false, message: 'the agent hub is not running' });
});

t.test('a database that does not answer counts as down, not as a hung probe', async (t) => {
  const hung: DatabaseProbe = { dialect: 'postgres', ping: () => new Promise(() => undefined), pendingMigrations: () => new Promise(() => undefined) };
  const r = await checkReadiness({ database: hung, hubAccepting: () => true });
  t.equal(r.ready, false);
  t.same(r.checks.database, { ok: false, message: 'the database did not answer a trivial query' });
  t.same(r.checks.migrations, { ok: false, message: 'the applied migrations could not be read' });
  const s = parsePromText(await new ControlPlaneMetrics('cp-hung', { database: hung, hub: () => undefined, shellSessionsOpen: () => undefined }).render());
  t.equal(s.value('vmkit_db_up', { dialect: 'postgres' }), 0);
  t.equal(s.value('vmkit_db_migrations_pending', { dialect: 'postgres' }), -1);
});
