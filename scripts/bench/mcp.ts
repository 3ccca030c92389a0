/**
 * MCP benchmark: `tools/call list_instances` through the embedded endpoint (/mcp, the
 * REST call made in-process with inject) and through standalone forwarding (`vmkit mcp`
 * as its own process, the REST call over real HTTP), beside the same REST call.
 * A real control-plane process on loopback; the SDK's own MCP client drives it.
 *
 *   node --import tsx scripts/bench/mcp.ts [--instances 20] [--clients 8] [--duration 8]
 *
 * Prints calls per second and latency p50/p99 (ms) per path. Figures, not assertions.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { parseArgs } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { closeDatabase, openDatabase } from '../../control-plane/src/db/index.ts';
import { createWorkspaceWithAdminKey } from '../../control-plane/src/auth/bootstrap.ts';
import { createInstance } from '../../control-plane/src/db/instances.ts';

const { values } = parseArgs({
  options: {
    instances: { type: 'string', default: '20' },
    clients: { type: 'string', default: '8' },
    duration: { type: 'string', default: '8' },
  },
});
const INSTANCES = Number(values.instances);
const CLIENTS = Number(values.clients);
const DURATION_MS = Number(values.duration) * 1000;
const ROOT = join(import.meta.dirname, '..', '..');

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const probe = createServer().listen(0, '127.0.0.1', () => {
      const { port } = probe.address() as AddressInfo;
      probe.close(() => resolve(port));
    });
  });
}

async function waitFor(url: string, proc: ChildProcess): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`${url}: the process exited with ${proc.exitCode}`);
    try {
      const res = await fetch(url, { method: 'GET' });
      if (res.status < 500) return;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`${url} did not answer in 30 s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

const dataDir = mkdtempSync(join(tmpdir(), 'vmkit-bench-mcp-'));
const db = await openDatabase(dataDir);
const { workspaceId, adminKey } = await createWorkspaceWithAdminKey(db, 'bench');
for (let i = 0; i < INSTANCES; i++) {
  await createInstance(db, { workspaceId, name: `vm-${i}`, provider: 'manual', status: 'running' });
}
await closeDatabase(db);

const cpPort = await freePort();
const env = { ...process.env, VMKIT_LOG_LEVEL: 'warn', VMKIT_RATE_LIMIT_MAX: '1000000000', VMKIT_RATE_LIMIT_ANONYMOUS_MAX: '1000000000' };
const cp = spawn(process.execPath, ['--import', 'tsx', 'control-plane/src/cli/server-main.ts', 'serve', '--port', String(cpPort), '--data-dir', dataDir], {
  cwd: ROOT,
  env,
  stdio: ['ignore', 'ignore', 'inherit'],
});
const cpUrl = `http://127.0.0.1:${cpPort}`;
const gwPort = await freePort();
// From sources, like the server above (the bin runs control-plane/dist, which a fresh clone has not built).
const gw = spawn(process.execPath, ['--import', 'tsx', 'control-plane/src/cli/vmkit-main.ts', 'mcp', '--gateway', cpUrl, '--listen', `127.0.0.1:${gwPort}`], {
  cwd: ROOT,
  env,
  stdio: ['ignore', 'ignore', 'inherit'],
});

interface Figures {
  calls: number;
  errors: number;
  perSecond: number;
  p50: number;
  p99: number;
}

function summarize(latencies: number[], errors: number, elapsedMs: number): Figures {
  const sorted = [...latencies].sort((a, b) => a - b);
  const at = (q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? NaN;
  return { calls: sorted.length, errors, perSecond: (sorted.length / elapsedMs) * 1000, p50: at(0.5), p99: at(0.99) };
}

/** CLIENTS concurrent loops of `call` for DURATION_MS. */
async function drive(call: (i: number) => Promise<boolean>): Promise<Figures> {
  const latencies: number[] = [];
  let errors = 0;
  const start = performance.now();
  const end = start + DURATION_MS;
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, i) => {
      while (performance.now() < end) {
        const t0 = performance.now();
        const ok = await call(i).catch(() => false);
        if (ok) latencies.push(performance.now() - t0);
        else errors++;
      }
    }),
  );
  return summarize(latencies, errors, performance.now() - start);
}

async function mcpClients(url: string): Promise<Client[]> {
  return Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      const c = new Client({ name: 'bench', version: '0' });
      await c.connect(new StreamableHTTPClientTransport(new URL(url), { requestInit: { headers: { authorization: `Bearer ${adminKey}` } } }));
      return c;
    }),
  );
}

const fmt = (name: string, f: Figures) =>
  `  ${name.padEnd(28)} ${f.perSecond.toFixed(0).padStart(6)} calls/s   p50 ${f.p50.toFixed(2)} ms   p99 ${f.p99.toFixed(2)} ms   (${f.calls} calls, ${f.errors} errors)`;

try {
  await waitFor(`${cpUrl}/healthz`, cp);
  await waitFor(`http://127.0.0.1:${gwPort}/`, gw);
  const rest = await drive(async () => {
    const res = await fetch(`${cpUrl}/api/instances`, { headers: { authorization: `Bearer ${adminKey}` } });
    await res.arrayBuffer();
    return res.ok;
  });
  const embeddedClients = await mcpClients(`${cpUrl}/mcp`);
  const embedded = await drive(async (i) => {
    const res = await embeddedClients[i]?.callTool({ name: 'list_instances', arguments: {} });
    return res !== undefined && res.isError !== true;
  });
  const gatewayClients = await mcpClients(`http://127.0.0.1:${gwPort}/`);
  const standalone = await drive(async (i) => {
    const res = await gatewayClients[i]?.callTool({ name: 'list_instances', arguments: {} });
    return res !== undefined && res.isError !== true;
  });
  await Promise.all([...embeddedClients, ...gatewayClients].map((c) => c.close()));
  process.stdout.write(
    [
      `mcp: list_instances (${INSTANCES} instances), ${CLIENTS} concurrent clients, ${DURATION_MS / 1000} s each, ${cpus().length} CPUs, load ${loadavg()[0]?.toFixed(1)}`,
      fmt('REST GET /api/instances', rest),
      fmt('MCP embedded (/mcp)', embedded),
      fmt('MCP standalone (vmkit mcp)', standalone),
      '',
    ].join('\n'),
  );
  if (rest.errors + embedded.errors + standalone.errors > 0) process.exitCode = 1;
} finally {
  gw.kill('SIGTERM');
  cp.kill('SIGTERM');
  await Promise.all([new Promise((r) => gw.once('exit', r)), new Promise((r) => cp.once('exit', r))]);
  rmSync(dataDir, { recursive: true, force: true });
}
