/**
 * The hub's and the command bus's storage (the ports of hub/store.ts), one
 * implementation per dialect: the per-handshake and per-command paths are raw
 * prepared statements in each (drizzle builds its SQL on every call, which dominated
 * the benchmark's CPU profile); what both share is in hub-store-shared.ts.
 */
import type { AgentStateStore, CommandStore } from '../hub/store.ts';
import type { Db } from './index.ts';
import { PgHubStore } from './hub-store-pg.ts';
import { SqliteHubStore } from './hub-store-sqlite.ts';

export type HubStore = AgentStateStore & CommandStore;

/** `nodeId` (PostgreSQL only): record connections and commands as this process's (see PgHubStore). */
export function openHubStore(db: Db, nodeId?: string): HubStore {
  return db.dialect === 'sqlite' ? new SqliteHubStore(db) : new PgHubStore(db, nodeId);
}
