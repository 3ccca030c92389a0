import type pg from 'pg';
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
import type { PostgresDb } from './index.ts';
import * as shared from './hub-store-shared.ts';
import type { RawAgentRow, RawCommandRow } from './hub-store-shared.ts';
import { PgKeyedReads, PgWriteBatch } from './write-batch.ts';
import type { MergeableWrite } from './write-batch.ts';

const cols = shared.COMMAND_COLUMNS;

/**
 * Named statements: node-postgres parses and plans each once per pooled connection.
 * Each hot path is one round trip (the command insert reads its agent's scope in the
 * same statement; a heartbeat batch is one UPDATE over unnest()).
 */
const SQL = {
  findAgents: { name: 'hub_find_agents', text: 'SELECT id, instance_id, workspace_id, public_key, state, pinned_key_ids FROM agents WHERE id = ANY($1::text[])' },
  touch: {
    name: 'hub_touch',
    text: `UPDATE agents AS a SET last_seen = greatest(coalesce(a.last_seen, 0), v.at)
           FROM unnest($1::text[], $2::bigint[]) AS v(id, at) WHERE a.id = v.id`,
  },
  get: { name: 'hub_get_command', text: `SELECT ${cols} FROM commands WHERE id = $1` },
  deliverable: {
    name: 'hub_deliverable',
    text: `SELECT ${cols} FROM commands WHERE agent_id = ANY($1::text[]) AND state IN ('queued', 'sent') AND expires_at > $2 ORDER BY created_at, id`,
  },
  markNodeDisconnected: {
    name: 'hub_mark_node_disconnected',
    text: "UPDATE agents SET state = 'disconnected', node_id = NULL WHERE state = 'connected' AND (node_id = $1 OR node_id IS NULL)",
  },
  resultOwner: { name: 'hub_result_owner', text: 'SELECT agent_id, result IS NOT NULL AS has_result FROM commands WHERE id = $1' },
} as const;

/**
 * The hub's writes, each for many rows at once (the write batch merges the writes of one
 * kind; a write alone is one row): one array per column through unnest(), each returning
 * the key of the rows it wrote.
 */
const MERGED = {
  markConnected: {
    name: 'hub_mark_connected_many',
    // An instance waiting for its agent is running once the agent is connected: in the same statement.
    text: `WITH connected AS (
             UPDATE agents AS a SET state = 'connected', connected_at = v.at, last_seen = v.at, agent_version = v.agent_version, hostname = v.hostname,
               os = v.os, platform = v.platform, node_id = v.node_id
             FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[])
               AS v(at, agent_version, hostname, os, platform, id, node_id, public_key)
             WHERE a.id = v.id AND a.public_key = v.public_key AND a.state <> 'revoked' RETURNING a.id, a.instance_id, v.at
           ), running AS (
             UPDATE instances AS i SET status = 'running', status_reason = NULL, updated_at = c.at
             FROM connected AS c WHERE i.id = c.instance_id AND i.status IN ('provisioning', 'awaiting_agent')
           )
           SELECT id AS key FROM connected`,
  },
  markDisconnected: {
    name: 'hub_mark_disconnected_many',
    text: `UPDATE agents AS a SET state = 'disconnected', node_id = NULL, last_seen = greatest(coalesce(a.last_seen, 0), v.at)
           FROM unnest($1::bigint[], $2::text[], $3::text[]) AS v(at, id, node_id)
           WHERE a.id = v.id AND a.state = 'connected' AND a.node_id IS NOT DISTINCT FROM v.node_id RETURNING a.id AS key`,
  },
  insert: {
    name: 'hub_insert_commands',
    text: `INSERT INTO commands (id, workspace_id, agent_id, instance_id, type, state, envelope, signature, expires_at, result, error_key, created_at, updated_at, node_id)
           SELECT v.id, a.workspace_id, a.id, a.instance_id, v.type, v.state, v.envelope::json, v.signature, v.expires_at, NULL, NULL, v.created_at, v.created_at, v.node_id
           FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::text[])
             AS v(id, agent_id, type, state, envelope, signature, expires_at, created_at, node_id)
           JOIN agents AS a ON a.id = v.agent_id
           RETURNING id AS key`,
  },
  transition: {
    name: 'hub_transition_many',
    // from_states: the allowed states joined with commas (no state has one).
    text: `UPDATE commands AS c SET state = v.to_state, updated_at = v.at
           FROM unnest($1::text[], $2::bigint[], $3::text[], $4::text[], $5::text[]) AS v(to_state, at, id, from_states, agent_id)
           WHERE c.id = v.id AND c.state = ANY(string_to_array(v.from_states, ',')) AND (v.agent_id IS NULL OR c.agent_id = v.agent_id)
           RETURNING c.id AS key`,
  },
  recordResult: {
    name: 'hub_record_results',
    text: `UPDATE commands AS c SET result = v.result::json, error_key = v.error_key, state = v.state, updated_at = v.at
           FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::text[]) AS v(result, error_key, state, at, id, agent_id)
           WHERE c.id = v.id AND c.agent_id = v.agent_id AND c.result IS NULL AND c.state <> 'expired'
           RETURNING c.id AS key`,
  },
} as const;

/** A write of `kind` whose row is `values`, in the order of its statement's unnest() columns. */
function mergeable(kind: keyof typeof MERGED, key: string, values: readonly unknown[]): MergeableWrite {
  const statement = MERGED[kind];
  return { kind, key, row: values, merged: (columns) => ({ ...statement, values: columns }) };
}

/**
 * The hub's storage on PostgreSQL: named statements on the hot paths. Reads go to the
 * pool; writes (connection state, last_seen, command inserts, state changes, results)
 * go through one PgWriteBatch: those issued together share one transaction (one WAL
 * flush), and each resolves once that transaction committed.
 */
export class PgHubStore implements AgentStateStore, CommandStore {
  readonly #db: PostgresDb;
  readonly #pool: pg.Pool;
  readonly writes: PgWriteBatch;
  readonly #nodeId: string | null;
  /** The reads of every handshake (its agent, then its deliverable commands), batched per turn of the event loop. */
  readonly #agents: PgKeyedReads<AgentIdentity | undefined>;
  readonly #deliverable: PgKeyedReads<StoredCommand[]>;
  /** The earliest expiry a batched deliverable read accepts: the latest `now` any of its callers asked with. */
  #deliverableNow = 0;

  /**
   * `nodeId`: this process's node (several processes on one database). Connections are
   * recorded as held by it, commands as awaited by it, and start-up and shutdown mark
   * only its own agents disconnected. Without it, one process owns every agent.
   */
  constructor(db: PostgresDb, nodeId?: string) {
    this.#db = db;
    this.#pool = db.pool;
    this.writes = new PgWriteBatch(db.pool);
    this.#nodeId = nodeId ?? null;
    this.#agents = new PgKeyedReads(async (ids) => {
      const { rows } = await this.#pool.query<RawAgentRow>({ ...SQL.findAgents, values: [ids] });
      return new Map(rows.map((r) => [r.id, shared.agentFromRow(r)]));
    }, undefined);
    this.#deliverable = new PgKeyedReads(async (ids) => {
      const now = this.#deliverableNow;
      this.#deliverableNow = 0;
      const { rows } = await this.#pool.query<RawCommandRow>({ ...SQL.deliverable, values: [ids, now] });
      const byAgent = new Map<string, StoredCommand[]>();
      for (const row of rows) {
        const cmd = shared.commandFromRow(row);
        let list = byAgent.get(cmd.agentId);
        if (!list) byAgent.set(cmd.agentId, (list = []));
        list.push(cmd);
      }
      return byAgent;
    }, []);
  }

  /** How many handshake reads shared how many queries (benchmarks and tests). */
  get readStats(): { reads: number; queries: number } {
    return { reads: this.#agents.stats.reads + this.#deliverable.stats.reads, queries: this.#agents.stats.queries + this.#deliverable.stats.queries };
  }

  findAgent(agentId: string): Promise<AgentIdentity | undefined> {
    return this.#agents.read(agentId);
  }

  async markConnected(agentId: string, info: ConnectedInfo): Promise<boolean> {
    const res = await this.writes.write(mergeable('markConnected', agentId, [info.connectedAt, info.agentVersion, info.hostname, info.os, info.platform, agentId, this.#nodeId, info.publicKey]));
    return res.rowCount === 1;
  }

  async markDisconnected(agentId: string, at: number): Promise<void> {
    // Only while this node still holds it: an agent that already reconnected elsewhere stays connected there.
    await this.writes.write(mergeable('markDisconnected', agentId, [at, agentId, this.#nodeId]));
  }

  async touchLastSeen(seen: ReadonlyMap<string, number>): Promise<void> {
    if (seen.size === 0) return;
    await this.writes.query({ ...SQL.touch, values: [[...seen.keys()], [...seen.values()]] });
  }

  async markAllDisconnected(): Promise<void> {
    if (this.#nodeId !== null) {
      await this.#pool.query({ ...SQL.markNodeDisconnected, values: [this.#nodeId] });
      return;
    }
    await shared.markAllDisconnected(this.#db);
  }

  async setPinnedKeys(agentId: string, keyIds: readonly string[]): Promise<void> {
    await shared.setPinnedKeys(this.#db, agentId, keyIds);
  }

  async insert(cmd: Omit<StoredCommand, 'result' | 'updatedAt'>): Promise<void> {
    // The command's workspace and instance come from its agent's row in the same statement.
    const res = await this.writes.write(
      mergeable('insert', cmd.id, [cmd.id, cmd.agentId, cmd.type, cmd.state, JSON.stringify(cmd.envelope), shared.signatureColumn(cmd), cmd.expiresAt, cmd.createdAt, this.#nodeId]),
    );
    if (res.rowCount !== 1) throw new CommandBusError('not_found', `no agent ${cmd.agentId}`);
  }

  async get(commandId: string): Promise<StoredCommand | undefined> {
    const { rows } = await this.#pool.query<RawCommandRow>({ ...SQL.get, values: [commandId] });
    return rows[0] ? shared.commandFromRow(rows[0]) : undefined;
  }

  async transition(commandId: string, from: readonly CommandState[], to: CommandState, at: number, agentId?: string): Promise<boolean> {
    const res = await this.writes.write(mergeable('transition', commandId, [to, at, commandId, from.join(','), agentId ?? null]));
    return res.rowCount === 1;
  }

  async recordResult(commandId: string, agentId: string, result: StoredResult, at: number): Promise<RecordResultOutcome> {
    // One conditional UPDATE: a result is applied at most once, whatever arrives twice.
    const res = await this.writes.write(
      mergeable('recordResult', commandId, [JSON.stringify(result), result.error?.key ?? null, result.status === 'succeeded' ? 'succeeded' : 'failed', at, commandId, agentId]),
    );
    if (res.rowCount === 1) return 'stored';
    const { rows } = await this.#pool.query<{ agent_id: string; has_result: boolean }>({ ...SQL.resultOwner, values: [commandId] });
    const row = rows[0];
    return row && row.agent_id === agentId && row.has_result ? 'duplicate' : 'unknown';
  }

  deliverable(agentId: string, now: number): Promise<StoredCommand[]> {
    // Stricter is safe: a command is delivered only with at least the margin the latest caller asked for.
    this.#deliverableNow = Math.max(this.#deliverableNow, now);
    return this.#deliverable.read(agentId);
  }

  async timeOutOrphans(createdBefore: number, expiredBefore: number, at: number): Promise<string[]> {
    return shared.timeOutOrphans(this.#db, createdBefore, expiredBefore, at);
  }

  async expireQueued(now: number): Promise<string[]> {
    return shared.expireQueued(this.#db, now);
  }
}
