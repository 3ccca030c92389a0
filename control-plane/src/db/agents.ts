import { eq } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import type { Db } from './index.ts';
import type { Row } from './schema.ts';
import { exec, transaction } from './tx.ts';

export type AgentRow = Row<'agents'>;
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
    platform: null,
    pinnedKeyIds: input.pinnedKeyIds ?? null,
    createdAt: now,
    nodeId: null,
  };
  await db.orm.insert(db.t.agents).values(row);
  return row;
}

export async function getAgentByInstance(db: Db, instanceId: string): Promise<AgentRow | undefined> {
  const { agents } = db.t;
  const [row] = await db.orm.select().from(agents).where(eq(agents.instanceId, instanceId));
  return row;
}

/** Only for internal callers that already proved the workspace (hub, tests). */
export async function getAgentById(db: Db, id: string): Promise<AgentRow | undefined> {
  const { agents } = db.t;
  const [row] = await db.orm.select().from(agents).where(eq(agents.id, id));
  return row;
}

export type AgentPatch = Partial<
  Pick<AgentRow, 'publicKey' | 'state' | 'connectedAt' | 'lastSeen' | 'agentVersion' | 'hostname' | 'os' | 'platform' | 'pinnedKeyIds'>
>;

export async function updateAgent(db: Db, id: string, patch: AgentPatch): Promise<void> {
  const { agents } = db.t;
  await db.orm.update(agents).set(patch).where(eq(agents.id, id));
}

export interface EnrolledAgentSeed {
  instanceName: string;
  publicKey: string;
}

/**
 * Many instances, each with an enrolled (disconnected) agent, in one transaction and
 * in chunks of a few hundred rows per statement: how benchmarks and fleet tests set up
 * thousands of agents without the enrollment round trip. Answers the agent ids in order.
 */
export async function insertEnrolledAgents(
  db: Db,
  workspaceId: string,
  seeds: readonly EnrolledAgentSeed[],
  pinnedKeyIds: string[],
  now = Date.now(),
): Promise<string[]> {
  const ids = seeds.map(() => ({ instance: newId('instance'), agent: newId('agent') }));
  const CHUNK = 500;
  await transaction(db, function* (tx, t) {
    for (let i = 0; i < seeds.length; i += CHUNK) {
      const part = seeds.slice(i, i + CHUNK);
      const partIds = ids.slice(i, i + CHUNK);
      yield* exec(
        tx.insert(t.instances).values(
          part.map((s, j) => ({
            id: partIds[j]?.instance ?? '',
            workspaceId,
            name: s.instanceName,
            provider: 'manual',
            status: 'awaiting_agent',
            createdAt: now,
            updatedAt: now,
          })),
        ),
      );
      yield* exec(
        tx.insert(t.agents).values(
          part.map((s, j) => ({
            id: partIds[j]?.agent ?? '',
            workspaceId,
            instanceId: partIds[j]?.instance ?? '',
            publicKey: s.publicKey,
            state: 'disconnected',
            pinnedKeyIds,
            createdAt: now,
          })),
        ),
      );
    }
  });
  return ids.map((i) => i.agent);
}
