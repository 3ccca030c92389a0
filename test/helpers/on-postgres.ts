/**
 * Re-runs a whole test file with its control planes and hubs on PostgreSQL:
 *
 *   // test/postgres/hub-command-bus.test.ts
 *   await onPostgres(() => import('../hub/command-bus.test.ts'));
 *
 * The file's own tests run unchanged; VMKIT_TEST_DATABASE=postgres makes
 * startTestControlPlane() and startHub() give each of them a database of its own on
 * the run's test cluster. Without PostgreSQL the wrapper is skipped with the reason
 * (a failure under CI=true).
 */
import { postgresMissing } from './postgres.ts';
import { fileNeeds } from './prereq.ts';

export async function onPostgres(load: () => Promise<unknown>): Promise<void> {
  if (!fileNeeds(postgresMissing())) return;
  process.env.VMKIT_TEST_DATABASE = 'postgres';
  await load();
}
