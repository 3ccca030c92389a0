/**
 * The two definitions of each table agree on what the type check cannot see: the
 * same table name, columns (name, nullability, primary key, default or not), indexes
 * (name, unique or not, partial or not) and foreign keys. A table added to one dialect
 * only, or an index forgotten in one, fails here before any migration is generated.
 */
import t from 'tap';
import { tableShapes } from '../../control-plane/src/db/schema-shape.ts';

const sqlite = tableShapes('sqlite');
const pg = tableShapes('postgres');

t.test('both dialects define the same tables', async (t) => {
  t.same(Object.keys(pg).sort(), Object.keys(sqlite).sort());
  t.ok(Object.keys(sqlite).length >= 18);
});

for (const [key, shape] of Object.entries(sqlite)) {
  t.test(`${key}: same columns, indexes and foreign keys in both dialects`, async (t) => {
    t.same(pg[key], shape);
  });
}
