/** Constraint violations as either driver reports them (drizzle wraps the driver's error as `cause`). */

const SQLITE_UNIQUE = new Set(['SQLITE_CONSTRAINT_UNIQUE', 'SQLITE_CONSTRAINT_PRIMARYKEY']);
const PG_UNIQUE = '23505';

/**
 * True when `err` is a unique-constraint violation, of the index `index` when given.
 * PostgreSQL names the constraint; SQLite names an expression or partial index
 * (`index 'name'`) but only the columns of a plain one, so pass `index` only for the former.
 */
export function isUniqueViolation(err: unknown, index?: string): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 5; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    if (code === PG_UNIQUE) return index === undefined || (e as { constraint?: unknown }).constraint === index;
    if (typeof code === 'string' && SQLITE_UNIQUE.has(code)) return index === undefined || e.message.includes(`index '${index}'`);
  }
  return false;
}
