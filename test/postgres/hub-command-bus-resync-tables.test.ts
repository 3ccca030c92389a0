import { onPostgres } from '../helpers/on-postgres.ts';

await onPostgres(() => import('../hub/command-bus-resync.test.ts'));
