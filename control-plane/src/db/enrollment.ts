import { createHash, randomBytes } from 'node:crypto';
import { and, eq, gt, isNull } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import { nameTakenOr } from './instances.ts';
import type { Row } from './schema.ts';
import { exec, rows, transaction } from './tx.ts';
import type { TxStep } from './tx.ts';

export const ENROLLMENT_TOKEN_PREFIX = 'vmkenr_';

export function hashEnrollmentToken(token: string): string {
  return createHash('sha256').update(token, 'utf8').digest('hex');
}

/**
 * Registers an instance that waits for its agent: `awaiting_agent` (a machine set up by
 * hand), or `provisioning` for one a compute provider is about to make, so that a crash
 * before the create leaves a row start-up recovery knows to undo.
 */
export async function registerInstance(
  db: Db,
  input: { workspaceId: string; name: string; environmentId: string | null; provider: string; statusReason?: string; status?: 'awaiting_agent' | 'provisioning' },
  now: number,
): Promise<Row<'instances'>> {
  const row: Row<'instances'> = {
    id: newId('instance'),
    workspaceId: input.workspaceId,
    name: input.name,
    environmentId: input.environmentId,
    provider: input.provider,
    status: input.status ?? 'awaiting_agent',
    statusReason: input.statusReason ?? null,
    sshHost: null,
    sshPort: null,
    hardenedAt: null,
    createdAt: now,
    updatedAt: now,
    providerRef: null,
    sshHostKeys: null,
  };
  try {
    await db.orm.insert(db.t.instances).values(row);
  } catch (err) {
    throw nameTakenOr(err, row.name);
  }
  return row;
}

/**
 * A one-time token bound to one instance. Only its sha-256 is stored; the token itself
 * is returned once.
 */
export async function createEnrollmentToken(
  db: Db,
  input: { workspaceId: string; instanceId: string; ttlMs: number },
  now: number,
): Promise<{ id: string; token: string; expiresAt: number }> {
  const token = ENROLLMENT_TOKEN_PREFIX + randomBytes(32).toString('base64url');
  const id = newId('enrollmentToken');
  const expiresAt = now + input.ttlMs;
  await db.orm
    .insert(db.t.enrollmentTokens)
    .values({ id, workspaceId: input.workspaceId, instanceId: input.instanceId, hash: hashEnrollmentToken(token), expiresAt, usedAt: null, createdAt: now });
  return { id, token, expiresAt };
}

export interface EnrollInput {
  token: string;
  publicKey: string;
  hostname: string;
  os: string;
  agentVersion: string;
  /** Control-plane signing keys the agent receives (and pins) with this enrollment. */
  pinnedKeyIds: string[];
  /** The VM's SSH host public keys; undefined (an older agent) leaves the recorded ones as they are. */
  sshHostKeys?: string[];
}

export type EnrollOutcome =
  | { ok: true; agentId: string; instanceId: string; workspaceId: string; replacedKey: boolean }
  | { ok: false };

/**
 * Consumes the token and registers the agent key in one transaction: a token that is
 * unknown, used or expired registers nothing, and of two concurrent uses exactly one
 * wins (the conditional update of used_at). Re-enrolling an instance keeps its agent
 * id and replaces the key, so the old key can no longer authenticate.
 */
export async function enrollWithToken(db: Db, input: EnrollInput, now: number): Promise<EnrollOutcome> {
  const hash = hashEnrollmentToken(input.token);
  return transaction(db, function* (tx, t): Generator<TxStep, EnrollOutcome, unknown> {
    const [token] = yield* rows(tx.select().from(t.enrollmentTokens).where(eq(t.enrollmentTokens.hash, hash)));
    if (!token) return { ok: false };
    const consumed = yield* exec(
      tx
        .update(t.enrollmentTokens)
        .set({ usedAt: now })
        .where(and(eq(t.enrollmentTokens.id, token.id), isNull(t.enrollmentTokens.usedAt), gt(t.enrollmentTokens.expiresAt, now))),
    );
    if (consumed !== 1) return { ok: false };
    if (input.sshHostKeys !== undefined) {
      yield* exec(tx.update(t.instances).set({ sshHostKeys: input.sshHostKeys, updatedAt: now }).where(eq(t.instances.id, token.instanceId)));
    }
    const [existing] = yield* rows(tx.select({ id: t.agents.id }).from(t.agents).where(eq(t.agents.instanceId, token.instanceId)));
    const fields = {
      publicKey: input.publicKey,
      state: 'disconnected',
      connectedAt: null,
      agentVersion: input.agentVersion,
      hostname: input.hostname,
      os: input.os,
      pinnedKeyIds: input.pinnedKeyIds,
    };
    if (existing) {
      yield* exec(tx.update(t.agents).set(fields).where(eq(t.agents.id, existing.id)));
      return { ok: true, agentId: existing.id, instanceId: token.instanceId, workspaceId: token.workspaceId, replacedKey: true };
    }
    const agentId = newId('agent');
    yield* exec(tx.insert(t.agents).values({ id: agentId, workspaceId: token.workspaceId, instanceId: token.instanceId, lastSeen: null, createdAt: now, ...fields }));
    return { ok: true, agentId, instanceId: token.instanceId, workspaceId: token.workspaceId, replacedKey: false };
  });
}
