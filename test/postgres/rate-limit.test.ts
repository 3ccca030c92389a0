// The REST rate limits on PostgreSQL, where the windows are counted in the database
// (rate_limits) so that several processes share one budget per key or address.
import { onPostgres } from '../helpers/on-postgres.ts';

await onPostgres(() => import('../control-plane/rate-limit.test.ts'));
