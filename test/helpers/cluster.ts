/**
 * Several in-process control planes on one fresh PostgreSQL database, set up as an
 * operator runs them: one secret-box key file every process is given, each process its
 * own data dir, the operator's admin key (written by the first) handed to the others'
 * test clients. Everything is torn down with the test.
 */
import { randomBytes } from 'node:crypto';
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type pg from 'pg';
import type { Test } from 'tap';
import { listenerApplicationName } from '../../control-plane/src/db/pg-command-router.ts';
import { eventually } from './cp-process.ts';
import { startTestControlPlane } from './control-plane.ts';
import type { TestControlPlane, TestControlPlaneOptions } from './control-plane.ts';
import { createTestDatabase } from './postgres.ts';

export interface TestCluster {
  nodes: TestControlPlane[];
  databaseUrl: string;
  /** The secret-box key file all processes share (a process started later, e.g. a child process, needs it too). */
  secretKeyFile: string;
  /** A directory removed with the test, for more data dirs. */
  dir: string;
}

export interface TestClusterOptions {
  /** How many processes (default 2). */
  nodes?: number;
  /** Config every process gets (the database URL and the secret key file are added). */
  config?: TestControlPlaneOptions['config'];
  /** Node ids, one per process (default: each process makes its own). */
  nodeIds?: string[];
  /** Config of one process, over `config` (e.g. its port). */
  nodeConfig?: (index: number) => TestControlPlaneOptions['config'];
}

export async function startTestCluster(t: Test, opts: TestClusterOptions = {}): Promise<TestCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'vmk-cluster-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const secretKeyFile = join(dir, 'secret-box.key');
  writeFileSync(secretKeyFile, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
  const pgdb = await createTestDatabase();
  t.teardown(() => pgdb.drop());

  const nodes: TestControlPlane[] = [];
  const count = opts.nodes ?? 2;
  for (let i = 0; i < count; i++) {
    const dataDir = mkdtempSync(join(dir, `node${i}-`));
    const first = nodes[0];
    if (first) copyFileSync(join(first.dataDir, 'admin.key'), join(dataDir, 'admin.key'));
    const nodeId = opts.nodeIds?.[i];
    const node = await startTestControlPlane({
      dataDir,
      config: { ...opts.config, ...opts.nodeConfig?.(i), databaseUrl: pgdb.url, secretKeyFile, ...(nodeId !== undefined && { nodeId }) },
    });
    // Later processes find the workspace the first one made.
    if (first) node.workspaceId = first.workspaceId;
    t.teardown(() => node.close());
    nodes.push(node);
  }
  return { nodes, databaseUrl: pgdb.url, secretKeyFile, dir };
}

/** Kills `nodeId`'s LISTEN connection (by its application name) and waits until its node listens again. */
export async function cutListen(t: Test, admin: pg.Client, cp: TestControlPlane, nodeId: string): Promise<void> {
  const node = cp.ctx.clusterNode;
  if (!node) throw new Error('no cluster node');
  const before = node.notifyStats().reconnects;
  const killed = await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [listenerApplicationName(nodeId)]);
  t.equal(killed.rowCount, 1, `${nodeId}'s LISTEN connection was found and terminated`);
  await eventually(`${nodeId} to listen again`, () => {
    const s = node.notifyStats();
    return s.listening && s.reconnects > before ? true : undefined;
  });
}
