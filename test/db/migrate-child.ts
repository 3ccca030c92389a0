/**
 * One "control plane starting": connects, says `ready`, waits for `go` on stdin, then
 * migrates the database at argv[2] and prints how many migrations it applied.
 * Driven by migrate-lock.test.ts, several at once.
 */
import { createInterface } from 'node:readline';
import pg from 'pg';
import { migratePostgres } from '../../control-plane/src/db/postgres.ts';

const url = process.argv[2];
if (!url) throw new Error('usage: migrate-child.ts <postgres url>');
const pool = new pg.Pool({ connectionString: url, max: 2 });
await pool.query('SELECT 1');
process.stdout.write('ready\n');
const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  if (line !== 'go') continue;
  const applied = await migratePostgres(pool);
  process.stdout.write(`applied ${applied}\n`);
  break;
}
lines.close();
await pool.end();
