import { onPostgres } from '../helpers/on-postgres.ts';

await onPostgres(() => import('../hub/heartbeat-acks.test.ts'));
