/**
 * Deploy wake-ups in one process (DeployEvents, its watches) and their relay between
 * processes (ClusterDeployEvents) with a stand-in pool: the NOTIFYs a burst of changes
 * makes, a failed NOTIFY, and which notifications wake whom. The relay over a real
 * PostgreSQL is test/postgres/cluster-deploy-events.test.ts.
 */
import type pg from 'pg';
import t from 'tap';
import { ClusterDeployEvents, DEPLOY_EVENTS_CHANNEL, encodeDeployEvent, parseDeployEvent } from '../../control-plane/src/services/deploy/cluster-events.ts';
import { DeployEvents } from '../../control-plane/src/services/deploy/events.ts';
import type { ChannelSubscriber } from '../../control-plane/src/db/pg-command-router.ts';

// Longer than the test may run: a wait these resolve is one a wake-up ended.
const FOREVER = 600_000;

interface Held {
  values: unknown[];
  settle(err?: Error): void;
}

/** A pool whose queries wait until the test settles them. */
function heldPool(): { pool: pg.Pool; held: Held[]; next: () => Promise<Held> } {
  const held: Held[] = [];
  let waiting: ((h: Held) => void) | undefined;
  const query = (q: { values: unknown[] }): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const h: Held = { values: q.values, settle: (err) => (err ? reject(err) : resolve({ rows: [] })) };
      held.push(h);
      waiting?.(h);
      waiting = undefined;
    });
  return {
    // Only query() is used by the relay.
    pool: { query } as unknown as pg.Pool,
    held,
    next: () => new Promise<Held>((resolve) => (waiting = resolve)),
  };
}

function logs(): { logger: { debug(): void; info(): void; warn(o: object, m?: string): void; error(o: object, m?: string): void }; lines: string[] } {
  const lines: string[] = [];
  const push = (_o: object, m?: string) => void lines.push(m ?? '');
  return { logger: { debug() {}, info() {}, warn: push, error: push }, lines };
}

t.test('a watch keeps a change seen between two waits; wakeAll wakes every watch; closed watches are gone', async (t) => {
  const events = new DeployEvents();
  const w = events.watch('d1');
  const other = events.watch('d2');
  t.equal(events.waiting('d1'), 1);
  events.heard('d1');
  await w.next(FOREVER); // at once: the change came before the wait
  t.pass('a change before next() is not lost');
  const waiting = w.next(FOREVER);
  events.changed('d1');
  await waiting;
  t.pass('a change during next() wakes it');
  const both = Promise.all([w.next(FOREVER), other.next(FOREVER)]);
  events.wakeAll();
  await both;
  t.pass('wakeAll woke both deploys\' watches');
  w.close();
  other.close();
  t.equal(events.waiting('d1'), 0);
  t.equal(events.waiting('d2'), 0);
  const abort = new AbortController();
  const aborted = events.next('d1', FOREVER, abort.signal);
  t.equal(events.waiting('d1'), 1, 'next() waits with a watch of its own');
  abort.abort();
  await aborted;
  t.equal(events.waiting('d1'), 0, 'and closes it');
});

t.test('a burst of changes to one deploy: one NOTIFY under way, one more after it, none queued', async (t) => {
  const { pool, held, next } = heldPool();
  const events = new DeployEvents();
  const { logger } = logs();
  let sub: ChannelSubscriber | undefined;
  const relay = ClusterDeployEvents.attach({ subscribe: (ch, s) => (t.equal(ch, DEPLOY_EVENTS_CHANNEL), (sub = s)) }, { pool, events, logger });
  t.ok(sub, 'subscribed to the channel');

  const first = next();
  events.changed('d1');
  events.changed('d1');
  events.changed('d1');
  events.changed('d2');
  const h1 = await first;
  t.equal(held.length, 2, 'one NOTIFY for d1 under way, one for d2');
  t.same(parseDeployEvent(String(h1.values[1])), { deployId: 'd1', origin: relay.origin });
  const again = next();
  h1.settle();
  const h2 = await again;
  t.equal(held.length, 3, 'the changes made meanwhile: one more NOTIFY');
  t.same(parseDeployEvent(String(h2.values[1]))?.deployId, 'd1');
  h2.settle();
  held[1]?.settle();
  // A change after the burst ended starts a new NOTIFY; its failure is logged, not thrown.
  const h3p = next();
  events.changed('d1');
  const h3 = await h3p;
  t.equal(held.length, 4);
  h3.settle(new Error('connection refused'));
  const h4p = next();
  events.changed('d1');
  (await h4p).settle();
  await relay.settled();
  t.same(relay.stats(), { sent: 4, failed: 1 });
  t.equal(held.length, 5, 'five NOTIFYs for six changes');
});

t.test("notifications: another process's wake this one's waiters, its own and junk do not", async (t) => {
  const { pool } = heldPool();
  const events = new DeployEvents();
  const { logger, lines } = logs();
  let sub: ChannelSubscriber | undefined;
  const relay = ClusterDeployEvents.attach({ subscribe: (_ch, s) => (sub = s) }, { pool, events, logger });
  if (!sub) throw new Error('not subscribed');
  const w = events.watch('d1');
  sub.notified(encodeDeployEvent('d1', relay.origin));
  sub.notified('not json');
  sub.notified(JSON.stringify({ d: 1 }));
  sub.notified(encodeDeployEvent('d2', 'other'));
  t.equal(lines.filter((l) => l.includes('not ours')).length, 2, 'junk is logged');
  t.equal(w.pending, false, "its own NOTIFY, another deploy's and junk did not wake the watch");
  sub.notified(encodeDeployEvent('d1', 'other'));
  t.equal(w.pending, true, "another process's change woke it");
  await w.next(FOREVER);
  t.equal(w.pending, false);
  sub.resync();
  t.equal(w.pending, true, 'a resync wakes it');
  w.close();
});
