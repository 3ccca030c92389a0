import { and, asc, eq } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import type { Row } from './schema.ts';
import type { ApiKeyRow } from './api-keys.ts';
import { changed } from './tx.ts';

export type SshKeyRow = Row<'sshKeys'>;

export interface NewSshKey {
  workspaceId: string;
  keyId: string;
  publicKey: string;
  fingerprint: string;
  comment: string | null;
}

/** Undefined when the fingerprint is registered already (on any API key). */
export async function insertSshKey(db: Db, key: NewSshKey, now = Date.now()): Promise<SshKeyRow | undefined> {
  const { sshKeys } = db.t;
  const row: SshKeyRow = { ...key, id: newId('sshKey'), createdAt: now, lastUsedAt: null };
  const res = await db.orm.insert(sshKeys).values(row).onConflictDoNothing({ target: sshKeys.fingerprint });
  return changed(res) === 1 ? row : undefined;
}

export async function listSshKeys(db: Db, workspaceId: string, keyId: string): Promise<SshKeyRow[]> {
  const { sshKeys } = db.t;
  return db.orm
    .select()
    .from(sshKeys)
    .where(and(eq(sshKeys.workspaceId, workspaceId), eq(sshKeys.keyId, keyId)))
    .orderBy(asc(sshKeys.id));
}

export async function deleteSshKey(db: Db, workspaceId: string, keyId: string, id: string): Promise<SshKeyRow | undefined> {
  const { sshKeys } = db.t;
  const [row] = await db.orm
    .delete(sshKeys)
    .where(and(eq(sshKeys.workspaceId, workspaceId), eq(sshKeys.keyId, keyId), eq(sshKeys.id, id)))
    .returning();
  return row;
}

export async function getSshKeyById(db: Db, id: string): Promise<SshKeyRow | undefined> {
  const { sshKeys } = db.t;
  const [row] = await db.orm.select().from(sshKeys).where(eq(sshKeys.id, id));
  return row;
}

/** The gateway's lookup: any workspace, the fingerprint identifies the operator. */
export async function findSshKeyByFingerprint(db: Db, fingerprint: string): Promise<{ sshKey: SshKeyRow; apiKey: ApiKeyRow } | undefined> {
  const { apiKeys, sshKeys } = db.t;
  const [row] = await db.orm
    .select({ sshKey: sshKeys, apiKey: apiKeys })
    .from(sshKeys)
    .innerJoin(apiKeys, eq(apiKeys.id, sshKeys.keyId))
    .where(eq(sshKeys.fingerprint, fingerprint));
  return row;
}

export async function touchSshKey(db: Db, id: string, now = Date.now()): Promise<void> {
  const { sshKeys } = db.t;
  await db.orm.update(sshKeys).set({ lastUsedAt: now }).where(eq(sshKeys.id, id));
}
