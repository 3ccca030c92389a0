/**
 * A migrated database of either dialect for data-layer tests, closed (and dropped or
 * deleted) at the test's end:
 *
 *   for (const { dialect, skip } of testDialects()) {
 *     t.test(dialect, { skip: prerequisite(skip) }, async (t) => {
 *       const db = await openTestDatabase(t, dialect);
 *       ...
 *     });
 *   }
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeDatabase, openDatabase } from '../../control-plane/src/db/index.ts';
import type { Db } from '../../control-plane/src/db/index.ts';
import { createTestDatabase } from './postgres.ts';
import type { TestDialect } from './postgres.ts';

interface Teardown {
  teardown(fn: () => unknown): void;
}

export async function openTestDatabase(t: Teardown, dialect: TestDialect): Promise<Db> {
  if (dialect === 'postgres') {
    const pgdb = await createTestDatabase();
    const db = await openDatabase({ dataDir: '', databaseUrl: pgdb.url });
    t.teardown(async () => {
      await closeDatabase(db);
      await pgdb.drop();
    });
    return db;
  }
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-db-test-'));
  const db = await openDatabase(dir);
  t.teardown(async () => {
    await closeDatabase(db);
    rmSync(dir, { recursive: true, force: true });
  });
  return db;
}
