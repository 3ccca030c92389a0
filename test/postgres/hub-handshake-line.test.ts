import { onPostgres } from '../helpers/on-postgres.ts';

await onPostgres(() => import('../hub/handshake-line.test.ts'));
