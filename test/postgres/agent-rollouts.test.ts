import { onPostgres } from '../helpers/on-postgres.ts';

await onPostgres(() => import('../control-plane/agent-rollouts.test.ts'));
