/**
 * MCP benchmark: `tools/call list_instances` through the embedded endpoint (/mcp, the
 * REST call made in-process, mcp/in-process.ts) and through standalone forwarding (`vmkit mcp`
 * as its own process, the REST call over real HTTP), beside the same REST call.
 * A real control-plane process on loopback; the SDK's own MCP client drives it.
 *
 *   node --import tsx scripts/bench/mcp.ts [--instances 20] [--clients 8] [--duration 5] [--rounds 3]
 *     [--paths rest,embedded,standalone] [--log-level warn] [--cpu-prof DIR]
 *
 * The paths run in interleaved rounds (REST, embedded, standalone, REST, ...) so that a
 * change in the machine's load falls on all of them alike; the median round of each is
 * printed. Per path: calls per second, latency p50/p99, and CPU per call of the server
 * side (control plane, plus the `vmkit mcp` process on the standalone path, read from
 * /proc; in brackets the part on their JavaScript threads, the rest being mostly V8's GC
 * helper threads) and of the client (this process), then each MCP path against REST as a
 * ratio.
 * `--cpu-prof DIR` runs the server processes under `node --cpu-prof` (summarise a profile
 * with scripts/bench/cpuprofile-top.ts). Figures, not assertions.
 */
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
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
    duration: { type: 'string', default: '5' },
    rounds: { type: 'string', default: '3' },
    paths: { type: 'string', default: 'rest,embedded,standalone' },
    'log-level': { type: 'string', default: 'warn' },
    'cpu-prof': { type: 'string' },
  },
});
const INSTANCES = Number(values.instances);
const CLIENTS = Number(values.clients);
const DURATION_MS = Number(values.duration) * 1000;
const ROUNDS = Math.max(1, Number(values.rounds));
const ROOT = join(import.meta.dirname, '..', '..');
const PATHS = new Set(values.paths.split(','));
const PROF = values['cpu-prof'] === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', values['cpu-prof']];

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
const env = { ...process.env, VMKIT_LOG_LEVEL: values['log-level'], VMKIT_RATE_LIMIT_MAX: '1000000000', VMKIT_RATE_LIMIT_ANONYMOUS_MAX: '1000000000' };
const cp = spawn(process.execPath, [...PROF, '--import', 'tsx', 'control-plane/src/cli/server-main.ts', 'serve', '--port', String(cpPort), '--data-dir', dataDir], {
  cwd: ROOT,
  env,
  stdio: ['ignore', 'ignore', 'inherit'],
});
const cpUrl = `http://127.0.0.1:${cpPort}`;
const gwPort = await freePort();
// From sources, like the server above (the bin runs control-plane/dist, which a fresh clone has not built).
const gw = spawn(process.execPath, [...PROF, '--import', 'tsx', 'control-plane/src/cli/vmkit-main.ts', 'mcp', '--gateway', cpUrl, '--listen', `127.0.0.1:${gwPort}`], {
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

/** USER_HZ: /proc counts CPU time in these ticks (100 on Linux everywhere in practice). */
const CLOCK_TICKS = 100;

/**
 * CPU time (user + system, µs) a process has used so far, all its threads, from /proc; with
 * `mainThread`, only its JavaScript thread's (the rest is mostly V8's GC helper threads).
 * NaN where there is none.
 */
function cpuMicros(pid: number | undefined, mainThread = false): number {
  try {
    const stat = readFileSync(mainThread ? `/proc/${pid}/task/${pid}/stat` : `/proc/${pid}/stat`, 'utf8');
    const fields = stat.split(') ')[1]?.split(' ') ?? [];
    const ticks = Number(fields[11]) + Number(fields[12]);
    return (ticks * 1_000_000) / CLOCK_TICKS;
  } catch {
    return NaN;
  }
}

interface Run extends Figures {
  /** Server-side CPU per call (control plane, plus the gateway process when it is in the path), µs. */
  cpuPerCall: number;
  /** The part of it on the servers' JavaScript threads, µs. */
  mainCpuPerCall: number;
  /** CPU per call of this process, the client (fetch, or the SDK's MCP client), µs. */
  clientCpuPerCall: number;
}

async function measure(pids: (number | undefined)[], call: (i: number) => Promise<boolean>): Promise<Run> {
  const before = pids.map((pid) => cpuMicros(pid));
  const beforeMain = pids.map((pid) => cpuMicros(pid, true));
  const client = process.cpuUsage();
  const f = await drive(call);
  const used = pids.map((pid) => cpuMicros(pid)).reduce((sum, after, i) => sum + after - (before[i] ?? 0), 0);
  const usedMain = pids.map((pid) => cpuMicros(pid, true)).reduce((sum, after, i) => sum + after - (beforeMain[i] ?? 0), 0);
  const { user, system } = process.cpuUsage(client);
  const calls = Math.max(1, f.calls);
  return { ...f, cpuPerCall: used / calls, mainCpuPerCall: usedMain / calls, clientCpuPerCall: (user + system) / calls };
}

/** The median of numbers (the upper one of an even count). */
function medianOf(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

/** The median round of several, by calls per second. */
function median(runs: Run[]): Run {
  const sorted = [...runs].sort((a, b) => a.perSecond - b.perSecond);
  return sorted[Math.floor(sorted.length / 2)] as Run;
}

/**
 * How many times the REST figure an MCP path's is, round by round (each MCP round beside
 * the REST round just before it), then the median: a load change between rounds cancels out.
 */
function ratios(mcp: Run[], rest: Run[]): { perSecond: number; p50: number; server: number; total: number } {
  const pairs = mcp.flatMap((m, i) => (rest[i] ? [[m, rest[i]] as const] : []));
  return {
    perSecond: medianOf(pairs.map(([m, r]) => r.perSecond / m.perSecond)),
    p50: medianOf(pairs.map(([m, r]) => m.p50 / r.p50)),
    server: medianOf(pairs.map(([m, r]) => m.cpuPerCall / r.cpuPerCall)),
    total: medianOf(pairs.map(([m, r]) => (m.cpuPerCall + m.clientCpuPerCall) / (r.cpuPerCall + r.clientCpuPerCall))),
  };
}

const num = (v: number, digits = 0) => v.toFixed(digits).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
const times = (v: number) => `${v.toFixed(2)}×`;

function table(runs: Record<Path, Run[]>): string {
  const head = ['path', 'calls/s', 'p50 ms', 'p99 ms', 'server CPU µs/call', '(JS thread)', 'client CPU µs/call', '× REST: calls/s', 'p50', 'server CPU', 'server+client CPU'];
  const rows: string[][] = [head];
  for (const path of ['rest', 'embedded', 'standalone'] as const) {
    if (runs[path].length === 0) continue;
    const m = median(runs[path]);
    const row = [LABELS[path], num(m.perSecond), num(m.p50, 2), num(m.p99, 2), num(m.cpuPerCall), num(m.mainCpuPerCall), num(m.clientCpuPerCall)];
    if (path !== 'rest' && runs.rest.length > 0) {
      const r = ratios(runs[path], runs.rest);
      row.push(times(r.perSecond), times(r.p50), times(r.server), times(r.total));
    }
    rows.push(row);
  }
  const widths = head.map((_, c) => Math.max(...rows.map((r) => r[c]?.length ?? 0)));
  return rows.map((r) => `  ${r.map((cell, c) => (c === 0 ? cell.padEnd(widths[c] ?? 0) : cell.padStart(widths[c] ?? 0))).join('  ')}`).join('\n');
}

type Path = 'rest' | 'embedded' | 'standalone';
const LABELS: Record<Path, string> = {
  rest: 'REST GET /api/instances',
  embedded: 'MCP embedded (/mcp)',
  standalone: 'MCP standalone (vmkit mcp)',
};

try {
  await waitFor(`${cpUrl}/healthz`, cp);
  await waitFor(`http://127.0.0.1:${gwPort}/`, gw);
  const restCall = async () => {
    const res = await fetch(`${cpUrl}/api/instances`, { headers: { authorization: `Bearer ${adminKey}` } });
    await res.arrayBuffer();
    return res.ok;
  };
  const toolCall = (clients: Client[]) => async (i: number) => {
    const res = await clients[i]?.callTool({ name: 'list_instances', arguments: {} });
    return res !== undefined && res.isError !== true;
  };
  const embeddedClients = PATHS.has('embedded') ? await mcpClients(`${cpUrl}/mcp`) : [];
  const gatewayClients = PATHS.has('standalone') ? await mcpClients(`http://127.0.0.1:${gwPort}/`) : [];
  // Rounds interleave the paths, so a change in the machine's load falls on all of them alike.
  const runs: Record<Path, Run[]> = { rest: [], embedded: [], standalone: [] };
  for (let round = 0; round < ROUNDS; round++) {
    if (PATHS.has('rest')) runs.rest.push(await measure([cp.pid], restCall));
    if (PATHS.has('embedded')) runs.embedded.push(await measure([cp.pid], toolCall(embeddedClients)));
    if (PATHS.has('standalone')) runs.standalone.push(await measure([cp.pid, gw.pid], toolCall(gatewayClients)));
  }
  await Promise.all([...embeddedClients, ...gatewayClients].map((c) => c.close()));
  process.stdout.write(
    `mcp: list_instances (${INSTANCES} instances), ${CLIENTS} concurrent clients, ${ROUNDS} interleaved rounds of ${DURATION_MS / 1000} s per path ` +
      `(median round; ratios are medians of round-by-round ratios), ${cpus().length} CPUs, load ${loadavg().map((l) => l.toFixed(1)).join(' ')}\n` +
      `${table(runs)}\n`,
  );
  const errors = [...runs.rest, ...runs.embedded, ...runs.standalone].reduce((n, r) => n + r.errors, 0);
  if (errors > 0) process.exitCode = 1;
} finally {
  gw.kill('SIGTERM');
  cp.kill('SIGTERM');
  await Promise.all([new Promise((r) => gw.once('exit', r)), new Promise((r) => cp.once('exit', r))]);
  rmSync(dataDir, { recursive: true, force: true });
}
