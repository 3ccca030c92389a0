/**
 * REST API benchmark: authenticated `GET /api/instances` (key lookup by hash, scope
 * check, rate-limit bookkeeping, the instances+agents join, one audit row per request)
 * against a real control-plane process on loopback, driven by autocannon from this one.
 *
 *   node --import tsx scripts/bench/api.ts [--instances 20] [--connections 10] [--duration 10] [--log-level info]
 *
 * Prints requests per second and latency p50/p99 (ms). Figures are not assertions.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import autocannon from 'autocannon';
import { closeDatabase, openDatabase } from '../../control-plane/src/db/index.ts';
import { createWorkspaceWithAdminKey } from '../../control-plane/src/auth/bootstrap.ts';
import { createInstance } from '../../control-plane/src/db/instances.ts';
import { createAgent, updateAgent } from '../../control-plane/src/db/agents.ts';

const { values } = parseArgs({
  options: {
    instances: { type: 'string', default: '20' },
    connections: { type: 'string', default: '10' },
    duration: { type: 'string', default: '10' },
    'log-level': { type: 'string', default: 'info' },
  },
});
const INSTANCES = Number(values.instances);
const CONNECTIONS = Number(values.connections);
const DURATION = Number(values.duration);
const ROOT = join(import.meta.dirname, '..', '..');

const dataDir = mkdtempSync(join(tmpdir(), 'vmkit-bench-api-'));

// Seed before the server starts: a workspace (so no bootstrap), instances, half with agents.
const db = await openDatabase(dataDir);
const { workspaceId, adminKey } = await createWorkspaceWithAdminKey(db, 'bench');
for (let i = 0; i < INSTANCES; i++) {
  const inst = await createInstance(db, { workspaceId, name: `vm-${i}`, provider: 'local', status: 'running', sshHost: `10.0.0.${i + 2}`, sshPort: 22 });
  if (i % 2 === 0) {
    const agent = await createAgent(db, { workspaceId, instanceId: inst.id, publicKey: 'A'.repeat(43) });
    await updateAgent(db, agent.id, { state: 'connected', connectedAt: Date.now(), lastSeen: Date.now(), agentVersion: '0.1.0' });
  }
}
await closeDatabase(db);

const port = await new Promise<number>((resolve) => {
  const probe = createServer().listen(0, '127.0.0.1', () => {
    const { port } = probe.address() as AddressInfo;
    probe.close(() => resolve(port));
  });
});
const LOG_LEVEL = values['log-level'];
const server = spawn(
  process.execPath,
  ['--import', 'tsx', 'control-plane/src/cli/server-main.ts', 'serve', '--port', String(port), '--data-dir', dataDir],
  {
    cwd: ROOT,
    env: { ...process.env, VMKIT_LOG_LEVEL: LOG_LEVEL, VMKIT_RATE_LIMIT_MAX: '1000000000', VMKIT_RATE_LIMIT_ANONYMOUS_MAX: '1000000000' },
    // The server's JSON logs are discarded: the figures are about the API, and pino
    // writes them asynchronously either way.
    stdio: ['ignore', 'ignore', 'inherit'],
  },
);
const url = `http://127.0.0.1:${port}`;
const deadline = Date.now() + 30_000;
for (;;) {
  if (server.exitCode !== null) throw new Error(`the control plane exited with ${server.exitCode}`);
  try {
    if ((await fetch(`${url}/healthz`)).ok) break;
  } catch {
    // not listening yet
  }
  if (Date.now() > deadline) throw new Error('the control plane did not start in 30 s');
  await new Promise((r) => setTimeout(r, 200));
}

try {
  const result = await autocannon({
    url: `${url}/api/instances`,
    connections: CONNECTIONS,
    duration: DURATION,
    headers: { authorization: `Bearer ${adminKey}` },
  });
  const ok = result['2xx'];
  const lines = [
    `api: GET /api/instances (${INSTANCES} instances, ${INSTANCES / 2} with agents), ${CONNECTIONS} connections, ${DURATION} s, log level ${LOG_LEVEL}, ${cpus().length} CPUs, load ${loadavg()[0]?.toFixed(1)}`,
    `  requests/s: ${result.requests.average.toFixed(0)} (total ${result.requests.total}, 2xx ${ok}, non-2xx ${result.non2xx}, errors ${result.errors})`,
    `  latency ms: p50 ${result.latency.p50}  p90 ${result.latency.p90}  p99 ${result.latency.p99}  max ${result.latency.max}`,
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
  if (result.non2xx > 0 || result.errors > 0) process.exitCode = 1;
} finally {
  server.kill('SIGTERM');
  await new Promise((resolve) => server.once('exit', resolve));
  rmSync(dataDir, { recursive: true, force: true });
}
