import { readFileSync } from 'node:fs';
import { join } from 'node:path';

interface Journal {
  entries: { when: number }[];
}

/**
 * The `when` of the newest entry of a migration folder's journal: drizzle records it
 * as `created_at` of the migration it applied, so the database is up to date exactly
 * when its newest `created_at` is this.
 */
export function latestMigrationMillis(folder: string): number {
  const journal = JSON.parse(readFileSync(join(folder, 'meta', '_journal.json'), 'utf8')) as Journal;
  return Math.max(0, ...journal.entries.map((e) => e.when));
}
