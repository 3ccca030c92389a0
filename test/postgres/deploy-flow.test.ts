import { onPostgres } from '../helpers/on-postgres.ts';

await onPostgres(() => import('../deploy/deploy-flow.test.ts'));
