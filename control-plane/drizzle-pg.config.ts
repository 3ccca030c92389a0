import { defineConfig } from 'drizzle-kit';

// The PostgreSQL half of `npm run db:generate` (see drizzle.config.ts): the pgTable
// definitions beside the sqliteTable ones in ./src/db/schema, migrations into ./drizzle-pg.
export default defineConfig({
  dialect: 'postgresql',
  schema: './src/db/schema/*.ts',
  out: './drizzle-pg',
});
