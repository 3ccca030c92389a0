/**
 * What each dialect's definition of a table says beyond its TypeScript row type:
 * columns (name, nullability, primary key, default), indexes (name, unique, partial)
 * and the number of foreign keys. test/db/schema-parity.test.ts compares the two.
 */
import { getTableConfig as pgConfig } from 'drizzle-orm/pg-core';
import { getTableConfig as sqliteConfig } from 'drizzle-orm/sqlite-core';
import { pgSchema, sqliteSchema } from './schema.ts';
import type { TableName } from './schema.ts';

export interface TableShape {
  name: string;
  columns: string[];
  indexes: string[];
  foreignKeys: number;
}

interface Config {
  name: string;
  columns: { name: string; notNull: boolean; primary: boolean; hasDefault: boolean }[];
  indexes: { config: { name?: string | undefined; unique: boolean; where?: unknown } }[];
  foreignKeys: unknown[];
}

function shapeOf(c: Config): TableShape {
  return {
    name: c.name,
    columns: c.columns.map((col) => `${col.name}${col.primary ? ' pk' : ''}${col.notNull ? ' not null' : ''}${col.hasDefault ? ' default' : ''}`).sort(),
    indexes: c.indexes.map((i) => `${i.config.name ?? '?'}${i.config.unique ? ' unique' : ''}${i.config.where ? ' partial' : ''}`).sort(),
    foreignKeys: c.foreignKeys.length,
  };
}

/** Every table's shape in one dialect, by its key in the schema. */
export function tableShapes(dialect: 'sqlite' | 'postgres'): Record<string, TableShape> {
  const out: Record<string, TableShape> = {};
  for (const key of Object.keys(dialect === 'sqlite' ? sqliteSchema : pgSchema) as TableName[]) {
    out[key] = shapeOf(dialect === 'sqlite' ? sqliteConfig(sqliteSchema[key]) : pgConfig(pgSchema[key]));
  }
  return out;
}
