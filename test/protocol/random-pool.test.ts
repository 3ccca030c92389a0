import t from 'tap';
import { randomBase64url } from '../../shared-protocol/src/random-pool.ts';

t.test('pooled random bytes: the asked-for length, never handed out twice, across refills of the pool', async (t) => {
  // 18-byte nonces: a 4 KiB pool holds 227, so this goes through many refills (and a remainder too short for one).
  const nonces = Array.from({ length: 5_000 }, () => randomBase64url(18));
  t.same(nonces.filter((n) => Buffer.from(n, 'base64url').length !== 18), [], 'each is 18 bytes');
  t.equal(new Set(nonces).size, 5_000, 'every nonce is new');
  t.match(randomBase64url(4096), /^[A-Za-z0-9_-]+$/, 'a whole pool at once');
  t.throws(() => randomBase64url(4097), RangeError);
});
