import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { encodePublicKey, newId } from '@vmkit/protocol';
import { AgentHub } from '../../control-plane/src/hub/agent-hub.ts';
import type { HubOptions } from '../../control-plane/src/hub/agent-hub.ts';
import { InProcessCommandBus } from '../../control-plane/src/hub/command-bus.ts';
import { FileKeyRing } from '../../control-plane/src/hub/signing-keys.ts';
import type { CommandState, StoredResult } from '../../control-plane/src/hub/store.ts';
import { SqliteHubStore } from '../../control-plane/src/db/hub-store.ts';
import { closeDatabase, openDatabase } from '../../control-plane/src/db/index.ts';
import type { Db } from '../../control-plane/src/db/index.ts';
import { agents, instances, workspaces } from '../../control-plane/src/db/schema.ts';

/** An agents row as the tests read it. */
export interface AgentRowView {
  state: string;
  revoked: boolean;
  connectedAt: number | null;
  lastSeen: number | null;
  agentVersion: string | null;
  hostname: string | null;
  os: string | null;
  pinnedKeyIds: string[];
}

/** A commands row as the tests read it. */
export interface CommandRowView {
  state: CommandState;
  result: StoredResult | undefined;
}

/**
 * The production store (SqliteHubStore on a real SQLite file, migrations applied),
 * plus synchronous read-only views of its rows for assertions and a count of
 * last_seen batch writes. Every write the hub and the bus make goes through the
 * production code unchanged.
 */
export class ObservedHubStore extends SqliteHubStore {
  lastSeenWrites = 0;
  readonly agents: { get(agentId: string): AgentRowView | undefined };
  readonly commands: { get(commandId: string): CommandRowView | undefined; readonly size: number };

  constructor(db: Db) {
    super(db);
    const c = db.$client;
    const agentRow = c.prepare<[string], { state: string; connected_at: number | null; last_seen: number | null; agent_version: string | null; hostname: string | null; os: string | null; pinned_key_ids: string | null }>(
      'SELECT state, connected_at, last_seen, agent_version, hostname, os, pinned_key_ids FROM agents WHERE id = ?',
    );
    const commandRow = c.prepare<[string], { state: string; result: string | null }>('SELECT state, result FROM commands WHERE id = ?');
    const commandCount = c.prepare<[], { n: number }>('SELECT count(*) AS n FROM commands');
    this.agents = {
      get(agentId) {
        const r = agentRow.get(agentId);
        if (!r) return undefined;
        return {
          state: r.state,
          revoked: r.state === 'revoked',
          connectedAt: r.connected_at,
          lastSeen: r.last_seen,
          agentVersion: r.agent_version,
          hostname: r.hostname,
          os: r.os,
          pinnedKeyIds: r.pinned_key_ids === null ? [] : (JSON.parse(r.pinned_key_ids) as string[]),
        };
      },
    };
    this.commands = {
      get(commandId) {
        const r = commandRow.get(commandId);
        if (!r) return undefined;
        return { state: r.state as CommandState, result: r.result === null ? undefined : (JSON.parse(r.result) as StoredResult) };
      },
      get size() {
        return commandCount.get()?.n ?? 0;
      },
    };
  }

  override async touchLastSeen(seen: ReadonlyMap<string, number>): Promise<void> {
    this.lastSeenWrites++;
    await super.touchLastSeen(seen);
  }
}

export interface HubFixture {
  url: string;
  hub: AgentHub;
  bus: InProcessCommandBus;
  store: ObservedHubStore;
  db: Db;
  ring: FileKeyRing;
  dataDir: string;
  /** An enrolled agent: a workspace's instance and its agents row, as enrollment writes them. */
  addAgent(): { agentId: string; key: KeyObject };
  /** Revokes an agent the way the API does (state `revoked`). */
  revokeAgent(agentId: string): void;
  close(): Promise<void>;
}

const leftovers = new Set<() => void>();
process.once('exit', () => {
  for (const clean of leftovers) clean();
});

/** A hub on a plain HTTP server over the production SQLite store in a temp dir: hub behaviour without the app. */
export async function startHub(opts: Partial<HubOptions> = {}): Promise<HubFixture> {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmkit-hub-'));
  const db = openDatabase(dataDir);
  const store = new ObservedHubStore(db);
  const ring = FileKeyRing.open(dataDir);
  const hub = new AgentHub({ store, keys: ring, ...opts });
  const bus = new InProcessCommandBus({ store, link: hub, keys: ring, sweepIntervalMs: 200 });
  hub.addListener(bus);
  await hub.start();
  const server = createServer((_req, res) => res.writeHead(404).end());
  hub.attach(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const workspaceId = newId('workspace');
  const now = Date.now();
  db.insert(workspaces).values({ id: workspaceId, name: 'hub tests', createdAt: now }).run();
  return {
    url: `ws://127.0.0.1:${port}/agent/v1/connect`,
    hub,
    bus,
    store,
    db,
    ring,
    dataDir,
    addAgent() {
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      const agentId = newId('agent');
      const instanceId = newId('instance');
      const at = Date.now();
      db.insert(instances).values({ id: instanceId, workspaceId, name: instanceId, provider: 'manual', status: 'running', createdAt: at, updatedAt: at }).run();
      db.insert(agents)
        .values({
          id: agentId,
          workspaceId,
          instanceId,
          publicKey: encodePublicKey(publicKey),
          state: 'disconnected',
          pinnedKeyIds: ring.published().map((k) => k.key_id),
          createdAt: at,
        })
        .run();
      return { agentId, key: privateKey };
    },
    revokeAgent(agentId) {
      db.$client.prepare("UPDATE agents SET state = 'revoked' WHERE id = ?").run(agentId);
    },
    async close() {
      await bus.close();
      await hub.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      // Tests read the rows the closing hub wrote, so the file goes when the process ends.
      leftovers.add(() => {
        closeDatabase(db);
        rmSync(dataDir, { recursive: true, force: true });
      });
    },
  };
}

export async function until(cond: () => boolean, timeoutMs = 30_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
