import { onPostgres } from '../helpers/on-postgres.ts';

await onPostgres(() => import('../hub/orphans.test.ts'));
