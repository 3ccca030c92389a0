import { defineConfig } from 'drizzle-kit';

// `npm run db:generate -w @vmkit/control-plane` writes a new migration into ./drizzle
// from the schema; the control plane applies pending migrations at start-up.
export default defineConfig({
  dialect: 'sqlite',
  schema: './src/db/schema.ts',
  out: './drizzle',
});
