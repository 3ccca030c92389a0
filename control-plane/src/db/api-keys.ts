import { and, asc, eq, sql } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import { prepared } from './index.ts';
import type { Db } from './index.ts';
import type { Row } from './schema.ts';

export type ApiKeyRow = Row<'apiKeys'>;

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
  await db.orm.insert(db.t.apiKeys).values(row);
  return row;
}

/** Any workspace: the hash is what identifies the caller. */
export async function findApiKeyByHash(db: Db, hash: string): Promise<ApiKeyRow | undefined> {
  const { apiKeys } = db.t;
  const stmt = prepared(db, 'api_keys_by_hash', () =>
    db.orm.select().from(apiKeys).where(eq(apiKeys.hash, sql.placeholder('hash'))).prepare('api_keys_by_hash'),
  );
  const [row] = await stmt.execute({ hash });
  return row;
}

export async function getApiKey(db: Db, workspaceId: string, id: string): Promise<ApiKeyRow | undefined> {
  const { apiKeys } = db.t;
  const [row] = await db.orm
    .select()
    .from(apiKeys)
    .where(and(eq(apiKeys.workspaceId, workspaceId), eq(apiKeys.id, id)));
  return row;
}

export async function listApiKeys(db: Db, workspaceId: string): Promise<ApiKeyRow[]> {
  const { apiKeys } = db.t;
  return db.orm.select().from(apiKeys).where(eq(apiKeys.workspaceId, workspaceId)).orderBy(asc(apiKeys.id));
}

/** Sets revoked_at once (a second revoke keeps the first time). Undefined when no such key. */
export async function revokeApiKey(db: Db, workspaceId: string, id: string, now = Date.now()): Promise<ApiKeyRow | undefined> {
  const key = await getApiKey(db, workspaceId, id);
  if (!key) return undefined;
  if (key.revokedAt !== null) return key;
  const { apiKeys } = db.t;
  await db.orm.update(apiKeys).set({ revokedAt: now }).where(eq(apiKeys.id, id));
  return { ...key, revokedAt: now };
}

export async function touchApiKey(db: Db, id: string, now = Date.now()): Promise<void> {
  const { apiKeys } = db.t;
  await db.orm.update(apiKeys).set({ lastUsedAt: now }).where(eq(apiKeys.id, id));
}
