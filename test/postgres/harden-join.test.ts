import { onPostgres } from '../helpers/on-postgres.ts';

await onPostgres(() => import('../harden/harden-join.test.ts'));
