/**
 * Rate-limit windows shared by several control-plane processes on one database: one row
 * per limited key (`key:<api key id>`, `ip:<address>`, prefixed by the limit it belongs
 * to), counting the requests of the current fixed window. One process on SQLite counts
 * in memory instead; this table then stays empty.
 * Each table is written once per dialect, side by side (see ../schema.ts for the rules).
 */
import { bigint, index as pgIndex, integer as pgInteger, pgTable, text as pgText } from 'drizzle-orm/pg-core';
import { index, integer, sqliteTable, text } from 'drizzle-orm/sqlite-core';

export const sqliteRateLimits = sqliteTable(
  'rate_limits',
  {
    key: text('key').primaryKey(),
    /** When the current window began (database clock, ms). */
    windowStart: integer('window_start').notNull(),
    count: integer('count').notNull(),
  },
  (t) => [index('rate_limits_window_start_idx').on(t.windowStart)],
);
export const pgRateLimits = pgTable(
  'rate_limits',
  {
    key: pgText('key').primaryKey(),
    windowStart: bigint('window_start', { mode: 'number' }).notNull(),
    count: pgInteger('count').notNull(),
  },
  (t) => [pgIndex('rate_limits_window_start_idx').on(t.windowStart)],
);
