/**
 * Rate limits hold across control-plane processes on one PostgreSQL database: one key's
 * requests spread over two processes draw on one budget (the fleet's total, not each
 * process's), and so do requests without a valid key from one address. The windows are
 * rows of rate_limits, counted by one upsert per request on the database's clock.
 */
import t from 'tap';
import { rawRows, sql } from '../../control-plane/src/db/raw.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { startTestCluster } from '../helpers/cluster.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { postgresMissing } from '../helpers/postgres.ts';

if (fileNeeds(postgresMissing())) {
  t.test('one budget per key and per address across two control planes', async (t) => {
    // A long window: the test's requests all fall in one, however slow the machine.
    const rateLimit = { max: 6, anonymousMax: 3, windowMs: 600_000 };
    const { nodes } = await startTestCluster(t, { config: { rateLimit } });
    const [a, b] = nodes as [TestControlPlane, TestControlPlane];

    const key = (await a.api<{ secret: string }>('POST', '/api/keys', { body: { name: 'spread', scopes: ['repos:read'] } })).body.secret;
    const statuses: number[] = [];
    for (let i = 0; i < 6; i++) statuses.push((await (i % 2 === 0 ? a : b).api('GET', '/api/repos', { key })).status);
    t.same(statuses, [200, 200, 200, 200, 200, 200], 'six requests, three through each process, fit the budget of six');
    const overA = await a.api<{ error: string }>('GET', '/api/repos', { key });
    const overB = await b.api<{ error: string }>('GET', '/api/repos', { key });
    t.same([overA.status, overB.status], [429, 429], 'the seventh is refused through either process');
    t.equal(overB.body.error, 'rate_limited');
    const retryAfter = Number(overB.headers.get('retry-after'));
    t.ok(retryAfter > 500 && retryAfter <= 600, `Retry-After counts down the one window (${retryAfter} s)`);

    const anonymous: number[] = [];
    for (let i = 0; i < 4; i++) anonymous.push((await (i % 2 === 0 ? b : a).api('GET', '/api/repos', { key: null })).status);
    t.same(anonymous, [401, 401, 401, 429], 'without a key, one address has one budget of three across both');

    const rows = await rawRows<{ key: string; count: number }>(a.ctx.db, sql`SELECT key, count FROM rate_limits ORDER BY key`);
    t.ok(rows.some((r) => r.key.endsWith('|ip:127.0.0.1') && r.count === 4), 'the address counted once per request, in one row');
    t.notOk(rows.some((r) => r.key.includes(key)), 'rows name the key by id, never by its secret');
  });
}
