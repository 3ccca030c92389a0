/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and the hub awaits. */
import type { Statement } from 'better-sqlite3';
import { and, eq, inArray, lt, lte } from 'drizzle-orm';
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

/** The columns of `commands` as better-sqlite3 returns them (hot paths use raw prepared statements). */
interface RawCommandRow {
  id: string;
  agent_id: string;
  type: string;
  envelope: string;
  signature: string | null;
  state: string;
  created_at: number;
  updated_at: number;
  expires_at: number | null;
  result: string | null;
}

function fromRaw(r: RawCommandRow): StoredCommand {
  return {
    id: r.id,
    agentId: r.agent_id,
    type: r.type as CommandEnvelope['type'],
    envelope: JSON.parse(r.envelope) as CommandEnvelope,
    signature: r.signature ?? '',
    state: r.state as CommandState,
    createdAt: r.created_at,
    updatedAt: r.updated_at,
    expiresAt: r.expires_at ?? 0,
    result: r.result === null ? undefined : (JSON.parse(r.result) as StoredResult),
  };
}

const COMMAND_COLUMNS = 'id, agent_id, type, envelope, signature, state, created_at, updated_at, expires_at, result';

/**
 * The hub's and the command bus's storage on the control plane's SQLite database.
 * The per-handshake and per-command paths use prepared statements (drizzle builds and
 * prepares its SQL on every call, which dominated the benchmark's CPU profile); the
 * rest stays in drizzle. Table and column names are those of db/schema.ts.
 */
export class SqliteHubStore implements AgentStateStore, CommandStore {
  readonly #db: Db;
  readonly #stmt;
  constructor(db: Db) {
    this.#db = db;
    const c = db.$client;
    this.#stmt = {
      findAgent: c.prepare<[string], { id: string; instance_id: string; workspace_id: string; public_key: string; state: string; pinned_key_ids: string | null }>(
        'SELECT id, instance_id, workspace_id, public_key, state, pinned_key_ids FROM agents WHERE id = ?',
      ),
      markConnected: c.prepare<[number, number, string, string, string, string]>(
        "UPDATE agents SET state = 'connected', connected_at = ?, last_seen = ?, agent_version = ?, hostname = ?, os = ? WHERE id = ? AND state <> 'revoked'",
      ),
      markDisconnected: c.prepare<[number, string]>(
        "UPDATE agents SET state = 'disconnected', last_seen = max(coalesce(last_seen, 0), ?) WHERE id = ? AND state = 'connected'",
      ),
      touch: c.prepare<[number, string]>('UPDATE agents SET last_seen = max(coalesce(last_seen, 0), ?) WHERE id = ?'),
      agentScope: c.prepare<[string], { workspace_id: string; instance_id: string }>('SELECT workspace_id, instance_id FROM agents WHERE id = ?'),
      insert: c.prepare(
        `INSERT INTO commands (id, workspace_id, agent_id, instance_id, type, state, envelope, signature, expires_at, result, error_key, created_at, updated_at)
         VALUES (@id, @workspace_id, @agent_id, @instance_id, @type, @state, @envelope, @signature, @expires_at, NULL, NULL, @created_at, @created_at)`,
      ),
      get: c.prepare<[string], RawCommandRow>(`SELECT ${COMMAND_COLUMNS} FROM commands WHERE id = ?`),
      recordResult: c.prepare<[string, string | null, string, number, string, string]>(
        "UPDATE commands SET result = ?, error_key = ?, state = ?, updated_at = ? WHERE id = ? AND agent_id = ? AND result IS NULL AND state <> 'expired'",
      ),
      deliverable: c.prepare<[string, number], RawCommandRow>(
        `SELECT ${COMMAND_COLUMNS} FROM commands WHERE agent_id = ? AND state IN ('queued', 'sent') AND expires_at > ? ORDER BY created_at, id`,
      ),
      resultOwner: c.prepare<[string], { agent_id: string; has_result: number }>(
        'SELECT agent_id, result IS NOT NULL AS has_result FROM commands WHERE id = ?',
      ),
    };
  }

  async findAgent(agentId: string): Promise<AgentIdentity | undefined> {
    const row = this.#stmt.findAgent.get(agentId);
    if (!row) return undefined;
    return {
      id: row.id,
      instanceId: row.instance_id,
      workspaceId: row.workspace_id,
      publicKey: row.public_key,
      revoked: row.state === 'revoked',
      pinnedKeyIds: row.pinned_key_ids === null ? [] : (JSON.parse(row.pinned_key_ids) as string[]),
    };
  }

  async markConnected(agentId: string, info: ConnectedInfo): Promise<void> {
    this.#stmt.markConnected.run(info.connectedAt, info.connectedAt, info.agentVersion, info.hostname, info.os, agentId);
  }

  async markDisconnected(agentId: string, at: number): Promise<void> {
    this.#stmt.markDisconnected.run(at, agentId);
  }

  async touchLastSeen(seen: ReadonlyMap<string, number>): Promise<void> {
    this.#db.$client.transaction(() => {
      for (const [id, at] of seen) this.#stmt.touch.run(at, id);
    })();
  }

  async markAllDisconnected(): Promise<void> {
    this.#db.update(agents).set({ state: 'disconnected' }).where(eq(agents.state, 'connected')).run();
  }

  async setPinnedKeys(agentId: string, keyIds: readonly string[]): Promise<void> {
    this.#db.update(agents).set({ pinnedKeyIds: [...keyIds] }).where(eq(agents.id, agentId)).run();
  }

  async insert(cmd: Omit<StoredCommand, 'result' | 'updatedAt'>): Promise<void> {
    const agent = this.#stmt.agentScope.get(cmd.agentId);
    if (!agent) throw new CommandBusError('not_found', `no agent ${cmd.agentId}`);
    this.#stmt.insert.run({
      id: cmd.id,
      workspace_id: agent.workspace_id,
      agent_id: cmd.agentId,
      instance_id: agent.instance_id,
      type: cmd.type,
      state: cmd.state,
      envelope: JSON.stringify(cmd.envelope),
      signature: cmd.signature,
      expires_at: cmd.expiresAt,
      created_at: cmd.createdAt,
    });
  }

  async get(commandId: string): Promise<StoredCommand | undefined> {
    const row = this.#stmt.get.get(commandId);
    return row ? fromRaw(row) : undefined;
  }

  async transition(commandId: string, from: readonly CommandState[], to: CommandState, at: number): Promise<boolean> {
    const res = this.#transitionStmt(from.length).run(to, at, commandId, ...from);
    return res.changes === 1;
  }

  readonly #transitions = new Map<number, Statement<unknown[]>>();
  #transitionStmt(n: number): Statement<unknown[]> {
    let stmt = this.#transitions.get(n);
    if (!stmt) {
      stmt = this.#db.$client.prepare<unknown[]>(
        `UPDATE commands SET state = ?, updated_at = ? WHERE id = ? AND state IN (${Array.from({ length: n }, () => '?').join(', ')})`,
      );
      this.#transitions.set(n, stmt);
    }
    return stmt;
  }

  async recordResult(commandId: string, agentId: string, result: StoredResult, at: number): Promise<RecordResultOutcome> {
    // One conditional UPDATE: a result is applied at most once, whatever arrives twice.
    const res = this.#stmt.recordResult.run(
      JSON.stringify(result),
      result.error?.key ?? null,
      result.status === 'succeeded' ? 'succeeded' : 'failed',
      at,
      commandId,
      agentId,
    );
    if (res.changes === 1) return 'stored';
    const row = this.#stmt.resultOwner.get(commandId);
    return row && row.agent_id === agentId && row.has_result === 1 ? 'duplicate' : 'unknown';
  }

  async deliverable(agentId: string, now: number): Promise<StoredCommand[]> {
    // Runs at every handshake: a prepared statement, and the common answer is no rows.
    return this.#stmt.deliverable.all(agentId, now).map(fromRaw);
  }

  async timeOutOrphans(createdBefore: number, expiredBefore: number, at: number): Promise<string[]> {
    return this.#db
      .update(commands)
      .set({ state: 'timed_out', updatedAt: at })
      .where(
        and(
          inArray(commands.state, ['sent', 'acked', 'running']),
          lt(commands.createdAt, createdBefore),
          lt(commands.expiresAt, expiredBefore),
        ),
      )
      .returning({ id: commands.id })
      .all()
      .map((r) => r.id);
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
