import { onPostgres } from '../helpers/on-postgres.ts';

await onPostgres(() => import('../hub/agent-state.test.ts'));
