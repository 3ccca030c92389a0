import t from 'tap';
import { keyIdOf, pinKeys } from '@vmkit/protocol';
import { WIRE_SCHEMAS, wireFixtures } from '../helpers/fixtures.ts';

t.test('the wire corpus has valid and invalid cases of every shape', async (t) => {
  for (const schema of Object.keys(WIRE_SCHEMAS) as (keyof typeof WIRE_SCHEMAS)[]) {
    t.ok(wireFixtures('valid', schema).length >= 1, `${schema}: a valid case`);
    t.ok(wireFixtures('invalid', schema).length >= 3, `${schema}: invalid cases`);
  }
});

t.test('every valid wire fixture parses with its schema, unchanged', async (t) => {
  for (const fx of wireFixtures('valid')) {
    const res = WIRE_SCHEMAS[fx.schema].safeParse(fx.value);
    t.ok(res.success, `${fx.name}: ${fx.description}`);
    t.same(res.data, fx.value, `${fx.name}: nothing added or dropped`);
  }
});

t.test('every invalid wire fixture is refused at the field it names', async (t) => {
  for (const fx of wireFixtures('invalid')) {
    const res = WIRE_SCHEMAS[fx.schema].safeParse(fx.value);
    t.notOk(res.success, `${fx.name}: ${fx.description}`);
    if (fx.expect.ok) throw new Error(`${fx.name} is in the invalid set but expects ok`);
    t.same(
      res.error?.issues.map((i) => i.path.join('.')),
      [fx.expect.path],
      `${fx.name}: one issue, at ${JSON.stringify(fx.expect.path)}`,
    );
  }
});

t.test('the keys a valid enrollment answer announces can be pinned as they are', async (t) => {
  for (const fx of wireFixtures('valid', 'enroll_response')) {
    const keys = fx.value.signing_keys as { key_id: string; public_key: string }[];
    for (const k of keys) t.equal(keyIdOf(k.public_key), k.key_id, `${fx.name}: ${k.key_id} names its own public key`);
    t.equal(pinKeys(keys).size, keys.length, `${fx.name}: all pinned`);
  }
});
