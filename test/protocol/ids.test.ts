import t from 'tap';
import { ID_PREFIXES, idSchema, isId, monotonicUlid, newId, ulidTime } from '@vmkit/protocol';

t.test('ids are prefixed lowercase ULIDs', async (t) => {
  for (const kind of Object.keys(ID_PREFIXES) as Array<keyof typeof ID_PREFIXES>) {
    const id = newId(kind);
    t.match(id, new RegExp(`^${ID_PREFIXES[kind]}_[0-9a-hjkmnp-tv-z]{26}$`), kind);
    t.ok(isId(kind, id));
    t.ok(idSchema(kind).safeParse(id).success);
  }
});

t.test('ids sort by creation time, also within one millisecond', async (t) => {
  const ids = Array.from({ length: 2000 }, () => newId('command'));
  t.same([...ids].sort(), ids, 'string order is creation order');
  t.equal(new Set(ids).size, ids.length, 'no duplicates');
  const ulid = monotonicUlid();
  const early = ulid(1_000);
  const late = ulid(2_000);
  t.ok(early < late);
  t.equal(ulidTime(`inst_${early}`), 1_000);
  t.equal(ulidTime(late), 2_000);
});

t.test('ulid encodes the time it is given', async (t) => {
  const ulid = monotonicUlid();
  t.equal(ulid(0).slice(0, 10), '0000000000');
  t.equal(ulid(2 ** 48 - 1).slice(0, 10), '7zzzzzzzzz');
  t.equal(ulidTime(ulid(2 ** 48 - 1)), 2 ** 48 - 1, 'at the limit the time still reads back');
  t.throws(() => ulid(-1), RangeError);
  t.throws(() => ulid(2 ** 48), RangeError);
  t.throws(() => ulid(1.5), RangeError);
});

t.test('a clock that goes backwards still yields increasing ids', async (t) => {
  const ulid = monotonicUlid();
  const a = ulid(5_000_000);
  const b = ulid(4_000_000);
  t.ok(a < b, 'monotonic even when time steps back');
});

t.test('ids of another kind, case or shape are refused', async (t) => {
  const inst = newId('instance');
  t.notOk(isId('deploy', inst), 'wrong prefix');
  t.notOk(isId('instance', inst.toUpperCase()), 'upper case');
  t.notOk(isId('instance', `${inst}0`), 'too long');
  t.notOk(isId('instance', inst.replace(/.$/, 'u')), 'u is not in the alphabet');
  t.notOk(isId('instance', 'inst_81jx4n8rz3q5m7k2p0d6w9b1e0'), 'time overflow');
  t.notOk(isId('instance', 42));
});
