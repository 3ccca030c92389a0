import { defineConfig } from 'drizzle-kit';

// `npm run db:generate -w @vmkit/control-plane` writes a new migration for each dialect
// from the schema (this file: SQLite into ./drizzle; drizzle-pg.config.ts: PostgreSQL
// into ./drizzle-pg); the control plane applies pending migrations at start-up.
export default defineConfig({
  dialect: 'sqlite',
  schema: './src/db/schema/*.ts',
  out: './drizzle',
});
