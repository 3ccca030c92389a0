/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, PostgreSQL does not, and the hub awaits. */
import type { Statement } from 'better-sqlite3';
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
import type { SqliteDb } from './index.ts';
import * as shared from './hub-store-shared.ts';
import type { RawAgentRow, RawCommandRow } from './hub-store-shared.ts';
import { SqliteWriteBatch } from './write-batch.ts';

/**
 * The hub's storage on SQLite: better-sqlite3 prepared statements on the hot paths.
 * Writes (connection state, last_seen, command inserts, state changes, results) go
 * through one SqliteWriteBatch: those issued in the same turn of the event loop share
 * one transaction, and each resolves once that transaction committed.
 */
export class SqliteHubStore implements AgentStateStore, CommandStore {
  readonly #db: SqliteDb;
  readonly #stmt;
  readonly writes: SqliteWriteBatch;
  constructor(db: SqliteDb) {
    this.#db = db;
    this.writes = new SqliteWriteBatch(db.sqlite);
    const c = db.sqlite;
    const cols = shared.COMMAND_COLUMNS;
    this.#stmt = {
      findAgent: c.prepare<[string], RawAgentRow>('SELECT id, instance_id, workspace_id, public_key, state, pinned_key_ids FROM agents WHERE id = ?'),
      markConnected: c.prepare<[number, number, string, string, string, string | null, string, string]>(
        "UPDATE agents SET state = 'connected', connected_at = ?, last_seen = ?, agent_version = ?, hostname = ?, os = ?, platform = ? WHERE id = ? AND public_key = ? AND state <> 'revoked'",
      ),
      // An instance waiting for its agent is running once the agent is connected: in the same transaction.
      markInstanceRunning: c.prepare<[number, string]>(
        "UPDATE instances SET status = 'running', status_reason = NULL, updated_at = ? WHERE id = (SELECT instance_id FROM agents WHERE id = ?) AND status IN ('provisioning', 'awaiting_agent')",
      ),
      markDisconnected: c.prepare<[number, string]>(
        "UPDATE agents SET state = 'disconnected', last_seen = max(coalesce(last_seen, 0), ?) WHERE id = ? AND state = 'connected'",
      ),
      touch: c.prepare<[number, string]>('UPDATE agents SET last_seen = max(coalesce(last_seen, 0), ?) WHERE id = ?'),
      // The command's workspace and instance come from its agent's row in the same statement (no row: no agent).
      insert: c.prepare<[string, string, string, string, string, number, number, number, string]>(
        `INSERT INTO commands (id, workspace_id, agent_id, instance_id, type, state, envelope, signature, expires_at, result, error_key, created_at, updated_at)
         SELECT ?, workspace_id, id, instance_id, ?, ?, ?, ?, ?, NULL, NULL, ?, ? FROM agents WHERE id = ?`,
      ),
      get: c.prepare<[string], RawCommandRow>(`SELECT ${cols} FROM commands WHERE id = ?`),
      recordResult: c.prepare<[string, string | null, string, number, string, string]>(
        "UPDATE commands SET result = ?, error_key = ?, state = ?, updated_at = ? WHERE id = ? AND agent_id = ? AND result IS NULL AND state <> 'expired'",
      ),
      // The index alone answers it, with no sort: most handshakes find nothing to deliver.
      anyDeliverable: c.prepare<[string], number>("SELECT 1 FROM commands WHERE agent_id = ? AND state IN ('queued', 'sent') LIMIT 1").pluck(),
      deliverable: c.prepare<[string, number], RawCommandRow>(
        `SELECT ${cols} FROM commands WHERE agent_id = ? AND state IN ('queued', 'sent') AND expires_at > ? ORDER BY created_at, id`,
      ),
      resultOwner: c.prepare<[string], { agent_id: string; has_result: number }>(
        'SELECT agent_id, result IS NOT NULL AS has_result FROM commands WHERE id = ?',
      ),
    };
  }

  async findAgent(agentId: string): Promise<AgentIdentity | undefined> {
    const row = this.#stmt.findAgent.get(agentId);
    return row ? shared.agentFromRow(row) : undefined;
  }

  async markConnected(agentId: string, info: ConnectedInfo): Promise<boolean> {
    return this.writes.run(() => {
      const { changes } = this.#stmt.markConnected.run(info.connectedAt, info.connectedAt, info.agentVersion, info.hostname, info.os, info.platform, agentId, info.publicKey);
      if (changes === 1) this.#stmt.markInstanceRunning.run(info.connectedAt, agentId);
      return changes === 1;
    });
  }

  async markDisconnected(agentId: string, at: number): Promise<void> {
    await this.writes.run(() => this.#stmt.markDisconnected.run(at, agentId));
  }

  async touchLastSeen(seen: ReadonlyMap<string, number>): Promise<void> {
    await this.writes.run(() => {
      for (const [id, at] of seen) this.#stmt.touch.run(at, id);
    });
  }

  async markAllDisconnected(): Promise<void> {
    await shared.markAllDisconnected(this.#db);
  }

  async setPinnedKeys(agentId: string, keyIds: readonly string[]): Promise<void> {
    await shared.setPinnedKeys(this.#db, agentId, keyIds);
  }

  async insert(cmd: Omit<StoredCommand, 'result' | 'updatedAt'>): Promise<void> {
    const envelope = JSON.stringify(cmd.envelope);
    await this.writes.run(() => this.#insertNow(cmd, envelope));
  }

  #insertNow(cmd: Omit<StoredCommand, 'result' | 'updatedAt'>, envelope: string): void {
    const { changes } = this.#stmt.insert.run(cmd.id, cmd.type, cmd.state, envelope, shared.signatureColumn(cmd), cmd.expiresAt, cmd.createdAt, cmd.createdAt, cmd.agentId);
    if (changes !== 1) throw new CommandBusError('not_found', `no agent ${cmd.agentId}`);
  }

  async get(commandId: string): Promise<StoredCommand | undefined> {
    const row = this.#stmt.get.get(commandId);
    return row ? shared.commandFromRow(row) : undefined;
  }

  async transition(commandId: string, from: readonly CommandState[], to: CommandState, at: number, agentId?: string): Promise<boolean> {
    const stmt = this.#transitionStmt(from.length, agentId !== undefined);
    const args = agentId === undefined ? [to, at, commandId, ...from] : [to, at, commandId, agentId, ...from];
    const res = await this.writes.run(() => stmt.run(...args));
    return res.changes === 1;
  }

  readonly #transitions = new Map<string, Statement<unknown[]>>();
  #transitionStmt(n: number, ofAgent: boolean): Statement<unknown[]> {
    const key = `${n}:${ofAgent}`;
    let stmt = this.#transitions.get(key);
    if (!stmt) {
      stmt = this.#db.sqlite.prepare<unknown[]>(
        `UPDATE commands SET state = ?, updated_at = ? WHERE id = ?${ofAgent ? ' AND agent_id = ?' : ''} AND state IN (${Array.from({ length: n }, () => '?').join(', ')})`,
      );
      this.#transitions.set(key, stmt);
    }
    return stmt;
  }

  async recordResult(commandId: string, agentId: string, result: StoredResult, at: number): Promise<RecordResultOutcome> {
    // One conditional UPDATE: a result is applied at most once, whatever arrives twice.
    const text = JSON.stringify(result);
    const state = result.status === 'succeeded' ? 'succeeded' : 'failed';
    return this.writes.run((): RecordResultOutcome => {
      const res = this.#stmt.recordResult.run(text, result.error?.key ?? null, state, at, commandId, agentId);
      if (res.changes === 1) return 'stored';
      const row = this.#stmt.resultOwner.get(commandId);
      return row && row.agent_id === agentId && row.has_result === 1 ? 'duplicate' : 'unknown';
    });
  }

  async deliverable(agentId: string, now: number): Promise<StoredCommand[]> {
    // Runs at every handshake, and the common answer is no rows: an index-only probe first
    // (2 µs here against 12-17 µs for the query with its sort, measured on an empty table).
    if (this.#stmt.anyDeliverable.get(agentId) === undefined) return [];
    return this.#stmt.deliverable.all(agentId, now).map(shared.commandFromRow);
  }

  async timeOutOrphans(createdBefore: number, expiredBefore: number, at: number): Promise<string[]> {
    return shared.timeOutOrphans(this.#db, createdBefore, expiredBefore, at);
  }

  async expireQueued(now: number): Promise<string[]> {
    return shared.expireQueued(this.#db, now);
  }
}
