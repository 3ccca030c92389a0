/**
 * A response's audit row is on file before the client has the response: the row is
 * written as the reply is sent, not after. Shown on PostgreSQL, where another session
 * can hold the audit table: while it does, the row's INSERT waits and so does the
 * reply; once the table is free the reply comes and its row is already there. (Written
 * after the reply, the client would have its answer while the INSERT still waited, and
 * a reader through another control-plane process could miss the row.)
 */
import t from 'tap';
import pg from 'pg';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { createTestDatabase, postgresMissing } from '../helpers/postgres.ts';
import { fileNeeds } from '../helpers/prereq.ts';

if (fileNeeds(postgresMissing())) {
  t.test('the reply waits for its audit row', async (t) => {
    const target = await createTestDatabase();
    t.teardown(() => target.drop());
    const cp = await startTestControlPlane({ config: { databaseUrl: target.url } });
    t.teardown(() => cp.close());
    await cp.api('GET', '/api/instances'); // warm: the pool has its connections

    const locker = new pg.Client({ connectionString: target.url });
    await locker.connect();
    t.teardown(() => locker.end());
    const watcher = new pg.Client({ connectionString: target.url });
    await watcher.connect();
    t.teardown(() => watcher.end());

    await locker.query('BEGIN');
    await locker.query('LOCK TABLE audit_log IN EXCLUSIVE MODE');
    let answered = false;
    const reply = cp.api('GET', '/api/instances').then((r) => {
      answered = true;
      return r;
    });
    // Wait (on events in the database, not on time) until the INSERT is queued behind the lock.
    for (;;) {
      const { rows } = await watcher.query<{ n: string }>(
        "SELECT count(*) AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query ILIKE 'insert into \"audit_log\"%'",
      );
      if (Number(rows[0]?.n ?? 0) > 0) break;
      t.notOk(answered, 'no reply before its audit row was even tried');
      if (answered) break;
      await new Promise((r) => setImmediate(r));
    }
    t.notOk(answered, 'while its audit row cannot be written, the client has no reply');
    await locker.query('COMMIT');
    const res = await reply;
    t.equal(res.status, 200);
    const { rows } = await watcher.query<{ n: string }>(
      "SELECT count(*) AS n FROM audit_log WHERE route = '/api/instances' AND method = 'GET'",
    );
    t.equal(Number(rows[0]?.n), 2, 'both requests have their rows the moment the second reply is in');
  });
}
