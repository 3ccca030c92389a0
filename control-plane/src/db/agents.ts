/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { eq } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import { agents } from './schema.ts';

export type AgentRow = typeof agents.$inferSelect;
export type AgentState = 'connected' | 'disconnected' | 'revoked';

export interface NewAgent {
  workspaceId: string;
  instanceId: string;
  publicKey: string;
  agentVersion?: string | null;
  hostname?: string | null;
  os?: string | null;
  pinnedKeyIds?: string[] | null;
}

/** Registers the agent of an instance (state `disconnected` until its first handshake). */
export async function createAgent(db: Db, input: NewAgent, now = Date.now()): Promise<AgentRow> {
  const row: AgentRow = {
    id: newId('agent'),
    workspaceId: input.workspaceId,
    instanceId: input.instanceId,
    publicKey: input.publicKey,
    state: 'disconnected',
    connectedAt: null,
    lastSeen: null,
    agentVersion: input.agentVersion ?? null,
    hostname: input.hostname ?? null,
    os: input.os ?? null,
    pinnedKeyIds: input.pinnedKeyIds ?? null,
    createdAt: now,
  };
  db.insert(agents).values(row).run();
  return row;
}

export async function getAgentByInstance(db: Db, instanceId: string): Promise<AgentRow | undefined> {
  return db.select().from(agents).where(eq(agents.instanceId, instanceId)).get();
}

export type AgentPatch = Partial<
  Pick<AgentRow, 'publicKey' | 'state' | 'connectedAt' | 'lastSeen' | 'agentVersion' | 'hostname' | 'os' | 'pinnedKeyIds'>
>;

export async function updateAgent(db: Db, id: string, patch: AgentPatch): Promise<void> {
  db.update(agents).set(patch).where(eq(agents.id, id)).run();
}

