import t from 'tap';
import { TokenBucket } from '../../control-plane/src/hub/token-bucket.ts';

t.test('the bucket lets a burst through, then the refill rate', async (t) => {
  let now = 0;
  const b = new TokenBucket({ perSecond: 10, burst: 3, now: () => now });
  t.same([b.take(), b.take(), b.take(), b.take()], [true, true, true, false]);
  now += 100;
  t.ok(b.take(), 'one token back after 1/rate');
  t.notOk(b.take());
});

t.test('refused callers are given distinct slots one interval apart', async (t) => {
  let now = 0;
  const b = new TokenBucket({ perSecond: 100, burst: 1, now: () => now });
  b.take();
  const waits = Array.from({ length: 1000 }, () => (b.take() ? 0 : b.retryAfterMs(() => 0)));
  t.equal(waits[0], 250, 'never sooner than 250 ms');
  t.equal(waits[999], 250 + 999 * 10, 'the thousandth comes back ~10 s later at 100/s');
  t.ok(waits.every((w, i) => i === 0 || w > (waits[i - 1] ?? 0)), 'strictly increasing');
  now += 60_000;
  t.equal(b.retryAfterMs(() => 0), 250, 'the queue drains with time');
});

t.test('a bucket needs a positive rate', async (t) => {
  t.throws(() => new TokenBucket({ perSecond: 0 }), RangeError);
});
