import { onPostgres } from '../helpers/on-postgres.ts';

await onPostgres(() => import('../hub/agent-hub.test.ts'));
