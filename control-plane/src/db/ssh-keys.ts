/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { and, asc, eq } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import { apiKeys, sshKeys } from './schema.ts';
import type { ApiKeyRow } from './api-keys.ts';

export type SshKeyRow = typeof sshKeys.$inferSelect;

export interface NewSshKey {
  workspaceId: string;
  keyId: string;
  publicKey: string;
  fingerprint: string;
  comment: string | null;
}

/** Undefined when the fingerprint is registered already (on any API key). */
export async function insertSshKey(db: Db, key: NewSshKey, now = Date.now()): Promise<SshKeyRow | undefined> {
  const row: SshKeyRow = { ...key, id: newId('sshKey'), createdAt: now, lastUsedAt: null };
  const res = db.insert(sshKeys).values(row).onConflictDoNothing({ target: sshKeys.fingerprint }).run();
  return res.changes === 1 ? row : undefined;
}

export async function listSshKeys(db: Db, workspaceId: string, keyId: string): Promise<SshKeyRow[]> {
  return db
    .select()
    .from(sshKeys)
    .where(and(eq(sshKeys.workspaceId, workspaceId), eq(sshKeys.keyId, keyId)))
    .orderBy(asc(sshKeys.id))
    .all();
}

export async function deleteSshKey(db: Db, workspaceId: string, keyId: string, id: string): Promise<SshKeyRow | undefined> {
  const row = db
    .select()
    .from(sshKeys)
    .where(and(eq(sshKeys.workspaceId, workspaceId), eq(sshKeys.keyId, keyId), eq(sshKeys.id, id)))
    .get();
  if (!row) return undefined;
  db.delete(sshKeys).where(eq(sshKeys.id, id)).run();
  return row;
}

export async function getSshKeyById(db: Db, id: string): Promise<SshKeyRow | undefined> {
  return db.select().from(sshKeys).where(eq(sshKeys.id, id)).get();
}

/** The gateway's lookup: any workspace, the fingerprint identifies the operator. */
export async function findSshKeyByFingerprint(db: Db, fingerprint: string): Promise<{ sshKey: SshKeyRow; apiKey: ApiKeyRow } | undefined> {
  const row = db.select().from(sshKeys).innerJoin(apiKeys, eq(apiKeys.id, sshKeys.keyId)).where(eq(sshKeys.fingerprint, fingerprint)).get();
  return row ? { sshKey: row.ssh_keys, apiKey: row.api_keys } : undefined;
}

export async function touchSshKey(db: Db, id: string, now = Date.now()): Promise<void> {
  db.update(sshKeys).set({ lastUsedAt: now }).where(eq(sshKeys.id, id)).run();
}
