/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { and, asc, eq, sql } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import { prepared } from './index.ts';
import type { Db } from './index.ts';
import { apiKeys } from './schema.ts';

export type ApiKeyRow = typeof apiKeys.$inferSelect;

export interface NewApiKey {
  workspaceId: string;
  name: string;
  hash: string;
  prefix: string;
  scopes: string[];
  expiresAt?: number | null;
}

/** The row a new key is stored as (also used inside createWorkspaceWithKey's transaction). */
export function newApiKeyRow(key: NewApiKey, now: number): ApiKeyRow {
  return {
    id: newId('apiKey'),
    workspaceId: key.workspaceId,
    name: key.name,
    hash: key.hash,
    prefix: key.prefix,
    scopes: key.scopes,
    expiresAt: key.expiresAt ?? null,
    revokedAt: null,
    createdAt: now,
    lastUsedAt: null,
  };
}

export async function insertApiKey(db: Db, key: NewApiKey, now = Date.now()): Promise<ApiKeyRow> {
  const row = newApiKeyRow(key, now);
  db.insert(apiKeys).values(row).run();
  return row;
}

/** Any workspace: the hash is what identifies the caller. */
export async function findApiKeyByHash(db: Db, hash: string): Promise<ApiKeyRow | undefined> {
  const stmt = prepared(db, 'apiKeys.byHash', () =>
    db.select().from(apiKeys).where(eq(apiKeys.hash, sql.placeholder('hash'))).prepare(),
  );
  return stmt.get({ hash });
}

export async function getApiKey(db: Db, workspaceId: string, id: string): Promise<ApiKeyRow | undefined> {
  return db
    .select()
    .from(apiKeys)
    .where(and(eq(apiKeys.workspaceId, workspaceId), eq(apiKeys.id, id)))
    .get();
}

export async function listApiKeys(db: Db, workspaceId: string): Promise<ApiKeyRow[]> {
  return db.select().from(apiKeys).where(eq(apiKeys.workspaceId, workspaceId)).orderBy(asc(apiKeys.id)).all();
}

/** Sets revoked_at once (a second revoke keeps the first time). Undefined when no such key. */
export async function revokeApiKey(db: Db, workspaceId: string, id: string, now = Date.now()): Promise<ApiKeyRow | undefined> {
  const key = await getApiKey(db, workspaceId, id);
  if (!key) return undefined;
  if (key.revokedAt !== null) return key;
  db.update(apiKeys).set({ revokedAt: now }).where(eq(apiKeys.id, id)).run();
  return { ...key, revokedAt: now };
}

export async function touchApiKey(db: Db, id: string, now = Date.now()): Promise<void> {
  db.update(apiKeys).set({ lastUsedAt: now }).where(eq(apiKeys.id, id)).run();
}
