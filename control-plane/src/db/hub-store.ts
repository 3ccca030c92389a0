/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and the hub awaits. */
import { and, asc, eq, gt, inArray, lte, ne, sql } from 'drizzle-orm';
import type { CommandEnvelope } from '@vmkit/protocol';
import { CommandBusError } from '../hub/errors.ts';
import type {
  AgentIdentity,
  AgentStateStore,
  CommandState,
  CommandStore,
  ConnectedInfo,
  RecordResultOutcome,
  StoredCommand,
  StoredResult,
} from '../hub/store.ts';
import type { Db } from './index.ts';
import { agents, commands } from './schema.ts';

type CommandRow = typeof commands.$inferSelect;

function toStored(row: CommandRow): StoredCommand {
  return {
    id: row.id,
    agentId: row.agentId,
    type: row.type as CommandEnvelope['type'],
    envelope: row.envelope as unknown as CommandEnvelope,
    signature: row.signature ?? '',
    state: row.state as CommandState,
    createdAt: row.createdAt,
    updatedAt: row.updatedAt,
    expiresAt: row.expiresAt ?? 0,
    result: (row.result as StoredResult | null) ?? undefined,
  };
}

/** The hub's and the command bus's storage on the control plane's SQLite database. */
export class SqliteHubStore implements AgentStateStore, CommandStore {
  readonly #db: Db;
  constructor(db: Db) {
    this.#db = db;
  }

  async findAgent(agentId: string): Promise<AgentIdentity | undefined> {
    const row = this.#db.select().from(agents).where(eq(agents.id, agentId)).get();
    if (!row) return undefined;
    return {
      id: row.id,
      instanceId: row.instanceId,
      workspaceId: row.workspaceId,
      publicKey: row.publicKey,
      revoked: row.state === 'revoked',
      pinnedKeyIds: row.pinnedKeyIds ?? [],
    };
  }

  async markConnected(agentId: string, info: ConnectedInfo): Promise<void> {
    this.#db
      .update(agents)
      .set({
        state: 'connected',
        connectedAt: info.connectedAt,
        lastSeen: info.connectedAt,
        agentVersion: info.agentVersion,
        hostname: info.hostname,
        os: info.os,
      })
      .where(and(eq(agents.id, agentId), ne(agents.state, 'revoked')))
      .run();
  }

  async markDisconnected(agentId: string, at: number): Promise<void> {
    this.#db
      .update(agents)
      .set({ state: 'disconnected', lastSeen: sql`max(coalesce(${agents.lastSeen}, 0), ${at})` })
      .where(and(eq(agents.id, agentId), eq(agents.state, 'connected')))
      .run();
  }

  async touchLastSeen(seen: ReadonlyMap<string, number>): Promise<void> {
    const stmt = this.#db.$client.prepare('UPDATE agents SET last_seen = max(coalesce(last_seen, 0), ?) WHERE id = ?');
    this.#db.$client.transaction(() => {
      for (const [id, at] of seen) stmt.run(at, id);
    })();
  }

  async markAllDisconnected(): Promise<void> {
    this.#db.update(agents).set({ state: 'disconnected' }).where(eq(agents.state, 'connected')).run();
  }

  async setPinnedKeys(agentId: string, keyIds: readonly string[]): Promise<void> {
    this.#db.update(agents).set({ pinnedKeyIds: [...keyIds] }).where(eq(agents.id, agentId)).run();
  }

  async insert(cmd: Omit<StoredCommand, 'result' | 'updatedAt'>): Promise<void> {
    const agent = this.#db
      .select({ workspaceId: agents.workspaceId, instanceId: agents.instanceId })
      .from(agents)
      .where(eq(agents.id, cmd.agentId))
      .get();
    if (!agent) throw new CommandBusError('not_found', `no agent ${cmd.agentId}`);
    this.#db
      .insert(commands)
      .values({
        id: cmd.id,
        workspaceId: agent.workspaceId,
        agentId: cmd.agentId,
        instanceId: agent.instanceId,
        type: cmd.type,
        state: cmd.state,
        envelope: cmd.envelope,
        signature: cmd.signature,
        expiresAt: cmd.expiresAt,
        result: null,
        errorKey: null,
        createdAt: cmd.createdAt,
        updatedAt: cmd.createdAt,
      })
      .run();
  }

  async get(commandId: string): Promise<StoredCommand | undefined> {
    const row = this.#db.select().from(commands).where(eq(commands.id, commandId)).get();
    return row ? toStored(row) : undefined;
  }

  async transition(commandId: string, from: readonly CommandState[], to: CommandState, at: number): Promise<boolean> {
    const res = this.#db
      .update(commands)
      .set({ state: to, updatedAt: at })
      .where(and(eq(commands.id, commandId), inArray(commands.state, [...from])))
      .run();
    return res.changes === 1;
  }

  async recordResult(commandId: string, agentId: string, result: StoredResult, at: number): Promise<RecordResultOutcome> {
    // One conditional UPDATE: a result is applied at most once, whatever arrives twice.
    const res = this.#db
      .update(commands)
      .set({
        result: result as unknown as Record<string, unknown>,
        errorKey: result.error?.key ?? null,
        state: result.status === 'succeeded' ? 'succeeded' : 'failed',
        updatedAt: at,
      })
      .where(
        and(
          eq(commands.id, commandId),
          eq(commands.agentId, agentId),
          sql`${commands.result} is null`,
          ne(commands.state, 'expired'),
        ),
      )
      .run();
    if (res.changes === 1) return 'stored';
    const row = this.#db
      .select({ agentId: commands.agentId, result: commands.result })
      .from(commands)
      .where(eq(commands.id, commandId))
      .get();
    return row && row.agentId === agentId && row.result !== null ? 'duplicate' : 'unknown';
  }

  async deliverable(agentId: string, now: number): Promise<StoredCommand[]> {
    return this.#db
      .select()
      .from(commands)
      .where(and(eq(commands.agentId, agentId), inArray(commands.state, ['queued', 'sent']), gt(commands.expiresAt, now)))
      .orderBy(asc(commands.createdAt), asc(commands.id))
      .all()
      .map(toStored);
  }

  async expireQueued(now: number): Promise<string[]> {
    return this.#db
      .update(commands)
      .set({ state: 'expired', updatedAt: now })
      .where(and(eq(commands.state, 'queued'), lte(commands.expiresAt, now)))
      .returning({ id: commands.id })
      .all()
      .map((r) => r.id);
  }
}
