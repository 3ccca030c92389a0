import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

/**
 * Where PostgreSQL's server programs are: $VMKIT_TEST_PG_BIN, else the newest
 * /usr/lib/postgresql/<major>/bin with initdb and postgres (Debian keeps them off PATH).
 */
export function postgresBinDir(): string | null {
  const env = process.env.VMKIT_TEST_PG_BIN;
  const has = (d: string) => existsSync(join(d, 'initdb')) && existsSync(join(d, 'postgres'));
  if (env) return has(env) ? env : null;
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const majors = readdirSync(root)
    .filter((v) => /^\d+$/.test(v))
    .sort((a, b) => Number(b) - Number(a));
  for (const v of majors) if (has(join(root, v, 'bin'))) return join(root, v, 'bin');
  return null;
}
