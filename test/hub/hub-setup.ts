import { mkdtempSync, rmSync } from 'node:fs';
import t from 'tap';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generateKeyPairSync } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { encodePublicKey, newId } from '@vmkit/protocol';
import type { MessageOf } from '@vmkit/protocol';
import { AgentHub } from '../../control-plane/src/hub/agent-hub.ts';
import type { HubOptions } from '../../control-plane/src/hub/agent-hub.ts';
import { InProcessCommandBus } from '../../control-plane/src/hub/command-bus.ts';
import type { InProcessCommandBusOptions } from '../../control-plane/src/hub/command-bus.ts';
import { FileKeyRing } from '../../control-plane/src/hub/signing-keys.ts';
import type { CommandState, StoredResult } from '../../control-plane/src/hub/store.ts';
import { getAgentById, insertEnrolledAgents, updateAgent } from '../../control-plane/src/db/agents.ts';
import { getCommand } from '../../control-plane/src/db/commands.ts';
import { openHubStore } from '../../control-plane/src/db/hub-store.ts';
import type { HubStore } from '../../control-plane/src/db/hub-store.ts';
import { closeDatabase, openDatabase } from '../../control-plane/src/db/index.ts';
import type { Db } from '../../control-plane/src/db/index.ts';
import { rawRows, sql } from '../../control-plane/src/db/raw.ts';
import { createWorkspace } from '../../control-plane/src/db/workspaces.ts';
import { createTestDatabase, selectedTestDatabase } from '../helpers/postgres.ts';
import { FakeAgent } from './fake-agent.ts';
import type { HelloOptions } from './fake-agent.ts';

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
 * The production store of the database VMKIT_TEST_DATABASE selects (SQLite file or a
 * PostgreSQL database of its own, migrations applied), plus read-only views of its
 * rows for assertions and a count of last_seen batch writes. Every write the hub and
 * the bus make goes through the production code unchanged.
 */
export type ObservedHubStore = HubStore & {
  lastSeenWrites: number;
  readonly agents: { get(agentId: string): Promise<AgentRowView | undefined> };
  readonly commands: { get(commandId: string): Promise<CommandRowView | undefined>; size(): Promise<number> };
};

export function observedHubStore(db: Db): ObservedHubStore {
  const inner = openHubStore(db);
  const touch = inner.touchLastSeen.bind(inner);
  const observed: ObservedHubStore = Object.assign(inner, {
    lastSeenWrites: 0,
    agents: {
      async get(agentId: string): Promise<AgentRowView | undefined> {
        const r = await getAgentById(db, agentId);
        if (!r) return undefined;
        return {
          state: r.state,
          revoked: r.state === 'revoked',
          connectedAt: r.connectedAt,
          lastSeen: r.lastSeen,
          agentVersion: r.agentVersion,
          hostname: r.hostname,
          os: r.os,
          pinnedKeyIds: r.pinnedKeyIds ?? [],
        };
      },
    },
    commands: {
      async get(commandId: string): Promise<CommandRowView | undefined> {
        const r = await getCommand(db, commandId);
        if (!r) return undefined;
        return { state: r.state as CommandState, result: (r.result ?? undefined) as StoredResult | undefined };
      },
      async size(): Promise<number> {
        const [row] = await rawRows<{ n: number }>(db, sql`SELECT count(*) AS n FROM commands`);
        return Number(row?.n ?? 0);
      },
    },
  });
  observed.touchLastSeen = async (seen) => {
    observed.lastSeenWrites++;
    await touch(seen);
  };
  return observed;
}

/** A migrated database of the dialect VMKIT_TEST_DATABASE selects; `drop` removes it (PostgreSQL). */
export async function openSelectedDatabase(dataDir: string): Promise<{ db: Db; drop: () => Promise<void> }> {
  if (selectedTestDatabase() === 'postgres') {
    const pgdb = await createTestDatabase();
    return { db: await openDatabase({ dataDir, databaseUrl: pgdb.url }), drop: () => pgdb.drop() };
  }
  return { db: await openDatabase(dataDir), drop: async () => undefined };
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
  addAgent(): Promise<{ agentId: string; key: KeyObject }>;
  /** addAgent, then a FakeAgent that completes the handshake (throws if it is not welcomed). */
  connectAgent(opts?: HelloOptions): Promise<{ agentId: string; key: KeyObject; agent: FakeAgent; welcome: MessageOf<'welcome'> }>;
  /** Revokes an agent the way the API does (state `revoked`). */
  revokeAgent(agentId: string): Promise<void>;
  close(): Promise<void>;
}


/** A hub on a plain HTTP server over the production store (SQLite or PostgreSQL) in a temp dir: hub behaviour without the app. */
export async function startHub(opts: Partial<HubOptions> = {}, busOpts: Pick<InProcessCommandBusOptions, 'logger' | 'maxBatchLeaves'> = {}): Promise<HubFixture> {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmkit-hub-'));
  const { db, drop } = await openSelectedDatabase(dataDir);
  const store = observedHubStore(db);
  const ring = FileKeyRing.open(dataDir);
  const hub = new AgentHub({ store, keys: ring, ...opts });
  const bus = new InProcessCommandBus({ store, link: hub, keys: ring, sweepIntervalMs: 200, ...busOpts });
  hub.addListener(bus);
  await hub.start();
  const server = createServer((_req, res) => res.writeHead(404).end());
  hub.attach(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const workspace = await createWorkspace(db, 'hub tests');
  const workspaceId = workspace.id;
  const fixture: HubFixture = {
    url: `ws://127.0.0.1:${port}/agent/v1/connect`,
    hub,
    bus,
    store,
    db,
    ring,
    dataDir,
    async addAgent() {
      const { privateKey, publicKey } = generateKeyPairSync('ed25519');
      const [agentId] = await insertEnrolledAgents(
        db,
        workspaceId,
        [{ instanceName: newId('instance'), publicKey: encodePublicKey(publicKey) }],
        ring.published().map((k) => k.key_id),
      );
      if (!agentId) throw new Error('no agent was inserted');
      return { agentId, key: privateKey };
    },
    async connectAgent(opts = {}) {
      const { agentId, key } = await fixture.addAgent();
      const { agent, welcome, error } = await FakeAgent.connect(fixture.url, agentId, key, opts);
      if (!welcome) throw new Error(`agent ${agentId} was not welcomed: ${error?.key ?? 'no answer'}`);
      return { agentId, key, agent, welcome };
    },
    async revokeAgent(agentId) {
      await updateAgent(db, agentId, { state: 'revoked' });
    },
    async close() {
      await bus.close();
      await hub.close();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      // Tests read the rows the closing hub wrote, so the database goes at the test's end (closeLater).
      closers.push(async () => {
        await closeDatabase(db);
        await drop();
        rmSync(dataDir, { recursive: true, force: true });
      });
    },
  };
  return fixture;
}

const closers: (() => Promise<void>)[] = [];
// The file's end closes and removes the databases of every hub it started.
t.teardown(async () => {
  for (const close of closers.splice(0)) await close();
});

/** Polls a condition (sync or async) every 20 ms until it holds. */
export async function until(cond: () => boolean | Promise<boolean>, timeoutMs = 30_000, what = 'condition'): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
