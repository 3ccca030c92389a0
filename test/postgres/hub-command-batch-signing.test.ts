import { onPostgres } from '../helpers/on-postgres.ts';

await onPostgres(() => import('../hub/command-batch-signing.test.ts'));
