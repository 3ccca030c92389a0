/**
 * Agent hub benchmark: N simulated agents (real Ed25519 keys, real handshakes, every
 * command verified) spread over several worker processes, against one real
 * control-plane process on this machine.
 *
 *   node --import tsx scripts/bench/agents.ts [--agents 10000] [--workers 4] [--handshakes-per-second 200]
 *     [--database sqlite|postgres] [--skip-restart]
 *
 * Prints: time until all agents are connected, control-plane RSS per connected agent,
 * control-plane CPU per handshake, `ping` fan-out latency p50/p99 at 1,000 agents and
 * at N, and the time until 99% are back after a control-plane restart (SIGTERM, then
 * a new process on the same port and data directory).
 *
 * File descriptors: the control plane holds one socket per agent, each worker N/W. The
 * processes are started through `prlimit --nofile=<hard>:<hard>` (no shell) when
 * prlimit exists, which raises the soft limit to the hard one; otherwise raise
 * `ulimit -n` before running. The benchmark refuses to start when N does not fit.
 *
 * `--database postgres` runs the control plane on a throwaway PostgreSQL cluster (the
 * tests' own: test/helpers/postgres.ts, initdb in a temporary directory, Unix socket,
 * stopped when this process exits). BENCH_CPU_PROF=<dir> writes one CPU profile of the
 * control plane per phase (connect, each fan-out) into <dir>, start-up excluded.
 */
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { cpus, loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { encodePublicKey, privateKeyFromSeed } from '@vmkit/protocol';
import { closeDatabase, openDatabase } from '../../control-plane/src/db/index.ts';
import { insertEnrolledAgents } from '../../control-plane/src/db/agents.ts';
import { createWorkspace } from '../../control-plane/src/db/workspaces.ts';
import { FileKeyRing } from '../../control-plane/src/hub/signing-keys.ts';
import { createTestDatabase, postgresMissing } from '../../test/helpers/postgres.ts';
import { benchSeed } from './agents-seed.ts';

const { values } = parseArgs({
  options: {
    agents: { type: 'string', default: '10000' },
    workers: { type: 'string', default: '4' },
    'handshakes-per-second': { type: 'string', default: '200' },
    'keep-data': { type: 'boolean', default: false },
    database: { type: 'string', default: 'sqlite' },
    /** Leave out the restart phase (it takes N / handshakes-per-second and more). */
    'skip-restart': { type: 'boolean', default: false },
  },
});
if (values.database !== 'sqlite' && values.database !== 'postgres') {
  process.stderr.write('bench: --database must be sqlite or postgres\n');
  process.exit(2);
}
const pgMissing = values.database === 'postgres' ? postgresMissing() : false;
if (pgMissing) {
  process.stderr.write(`bench: --database postgres cannot run here: ${pgMissing}\n`);
  process.exit(2);
}
const N = Number(values.agents);
const W = Math.max(1, Number(values.workers));
const HPS = Number(values['handshakes-per-second']);
const ROOT = join(import.meta.dirname, '..', '..');

function hardNofile(): number {
  try {
    const out = execFileSync('prlimit', ['--pid', String(process.pid), '--nofile', '--output=HARD', '--noheadings'], { encoding: 'utf8' });
    const n = Number(out.trim());
    return Number.isFinite(n) ? n : 1024;
  } catch {
    return 1024;
  }
}
const havePrlimit = existsSync('/usr/bin/prlimit') || existsSync('/bin/prlimit');
const nofile = havePrlimit ? hardNofile() : 1024;
if (N + 512 > nofile) {
  process.stderr.write(`bench: ${N} agents need more than the ${nofile} file descriptors allowed; raise the hard limit (ulimit -Hn) first\n`);
  process.exit(2);
}

function nodeProcess(script: string, env: NodeJS.ProcessEnv, extraNodeArgs: string[] = []): ChildProcess {
  const nodeArgs = [...extraNodeArgs, '--import', 'tsx', join(ROOT, script)];
  const [cmd, args] = havePrlimit
    ? ['prlimit', [`--nofile=${nofile}:${nofile}`, '--', process.execPath, ...nodeArgs]]
    : [process.execPath, nodeArgs];
  return spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

// --- seed the database: one workspace, N instances each with an enrolled agent ---
const dataDir = mkdtempSync(join(tmpdir(), 'vmkit-bench-agents-'));
const pgDb = values.database === 'postgres' ? await createTestDatabase() : undefined;
const seedStart = performance.now();
const db = await openDatabase({ dataDir, databaseUrl: pgDb?.url });
const ring = FileKeyRing.open(dataDir);
const ws = await createWorkspace(db, 'bench');
const seeds = Array.from({ length: N }, (_, i) => ({ instanceName: `bench-${i}`, publicKey: encodePublicKey(privateKeyFromSeed(benchSeed(i))) }));
const agentIds = await insertEnrolledAgents(db, ws.id, seeds, ring.published().map((k) => k.key_id));
const agents: [string, number][] = agentIds.map((id, i) => [id, i]);
await closeDatabase(db);
const seedMs = performance.now() - seedStart;

// --- the control-plane process ---
const port = await freePort();
interface ServerHandle {
  child: ChildProcess;
  ask<T>(op: string, extra?: Record<string, unknown>): Promise<T>;
}
interface Stats {
  rss: number;
  cpu: NodeJS.CpuUsage;
  hub: { connected: number; handshakesCompleted: number; refusedOverloaded: number };
}
interface Fanout {
  agents: number;
  failed: number;
  p50: number;
  p99: number;
  max: number;
  totalMs: number;
  cpuMs: number;
}

async function startServer(): Promise<ServerHandle> {
  const child = nodeProcess(
    'scripts/bench/agents-server.ts',
    {
      BENCH_DATA_DIR: dataDir,
      BENCH_PORT: String(port),
      ...(pgDb && { VMKIT_DATABASE_URL: pgDb.url }),
      VMKIT_AGENT_HANDSHAKES_PER_SECOND: String(HPS),
      // Every simulated agent dials from 127.0.0.1: the per-address pre-auth budget
      // would measure itself, not the hub.
      VMKIT_AGENT_PREAUTH_PER_ADDRESS_PER_SECOND: '1000000',
      VMKIT_AGENT_MAX_PENDING_HANDSHAKES: String(Math.max(5_000, N)),
    },
    ['--expose-gc'],
  );
  let next = 0;
  const pending = new Map<number, (v: unknown) => void>();
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`control plane exited (${code}) before it was ready`)));
    child.on('message', (m: { ready?: boolean; id?: number }) => {
      if (m.ready) resolve();
      else if (m.id !== undefined) {
        pending.get(m.id)?.(m);
        pending.delete(m.id);
      }
    });
  });
  return {
    child,
    ask<T>(op: string, extra: Record<string, unknown> = {}) {
      const id = next++;
      return new Promise<T>((resolve) => {
        pending.set(id, resolve as (v: unknown) => void);
        child.send({ id, op, ...extra });
      });
    },
  };
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitConnected(server: ServerHandle, target: number, timeoutMs: number): Promise<number | undefined> {
  const start = performance.now();
  while (performance.now() - start < timeoutMs) {
    const s = await server.ask<Stats>('stats');
    if (s.hub.connected >= target) return performance.now() - start;
    await sleep(100);
  }
  return undefined;
}

const fmt = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : 'n/a');
const lines: string[] = [];
const out = (s: string) => {
  lines.push(s);
  process.stdout.write(`${s}\n`);
};

const profDir = process.env.BENCH_CPU_PROF;
/** Profiles the control plane during one phase when BENCH_CPU_PROF names a directory. */
async function profiled<T>(server: ServerHandle, name: string, phase: () => Promise<T>): Promise<T> {
  if (!profDir) return phase();
  await server.ask('profile-start');
  try {
    return await phase();
  } finally {
    await server.ask('profile-stop', { file: join(profDir, `${name}.cpuprofile`) });
  }
}

out(`agents benchmark: ${N} simulated agents over ${W} worker processes, hub bound ${HPS} handshakes/s, fd limit ${nofile}, ${values.database}`);
out(`  machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, load average ${loadavg().map((l) => l.toFixed(2)).join(' ')} at the start, ${process.version}`);
out(`  seeded ${N} instances + agents in ${fmt(seedMs, 0)} ms`);
let server = await startServer();
const base = await server.ask<Stats>('stats', { gc: true });

// --- connect everyone at once: the hub paces them with `overloaded` + retry_after_ms ---
const workers: ChildProcess[] = [];
const perWorker = Math.ceil(N / W);
const connectStart = performance.now();
for (let w = 0; w < W; w++) {
  const child = nodeProcess('scripts/bench/agents-worker.ts', {});
  child.send({ op: 'start', url: `ws://127.0.0.1:${port}/agent/v1/connect`, agents: agents.slice(w * perWorker, (w + 1) * perWorker) });
  workers.push(child);
}
const allMs = await profiled(server, 'connect', () => waitConnected(server, N, Math.max(120_000, (N / HPS) * 4_000)));
const connectMs = performance.now() - connectStart;
const after = await server.ask<Stats>('stats', { gc: true });
const handshakes = after.hub.handshakesCompleted - base.hub.handshakesCompleted;
const cpuMs = (after.cpu.user + after.cpu.system - base.cpu.user - base.cpu.system) / 1000;
out(
  allMs === undefined
    ? `  time to all connected: NOT REACHED (${after.hub.connected}/${N} after ${fmt(connectMs / 1000)} s)`
    : `  time to all connected: ${fmt(allMs / 1000, 2)} s (${fmt((N / allMs) * 1000, 0)} handshakes/s; ${after.hub.refusedOverloaded} overloaded answers)`,
);
out(`  control-plane RSS: ${fmt(base.rss / 2 ** 20)} MiB idle, ${fmt(after.rss / 2 ** 20)} MiB with ${after.hub.connected} agents → ${fmt((after.rss - base.rss) / Math.max(1, after.hub.connected) / 1024)} KiB per agent`);
out(`  load average after connecting: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
out(`  control-plane CPU during the connect phase: ${fmt(cpuMs / Math.max(1, handshakes) * 1000, 0)} µs per completed handshake (all work incl. refusals, DB writes, pings)`);

// --- ping fan-out through the CommandBus ---
for (const count of [...new Set([Math.min(1000, N), N])]) {
  const f = await profiled(server, `fanout-${count}`, () => server.ask<Fanout>('fanout', { count }));
  out(
    `  ping fan-out to ${f.agents} agents: p50 ${fmt(f.p50)} ms, p99 ${fmt(f.p99)} ms, max ${fmt(f.max)} ms, all done in ${fmt(f.totalMs)} ms, ${f.failed} failed, CP CPU ${fmt(f.cpuMs / Math.max(1, f.agents) * 1000, 0)} µs per command`,
  );
}

// --- restart: SIGTERM (graceful: agents told 1001, marked disconnected), new process, same port ---
if (!values['skip-restart']) {
  const killAt = performance.now();
  server.child.kill('SIGTERM');
  await new Promise((r) => server.child.once('exit', r));
  const downMs = performance.now() - killAt;
  server = await startServer();
  const readyMs = performance.now() - killAt;
  const back99 = await waitConnected(server, Math.ceil(N * 0.99), 300_000);
  const backAll = await waitConnected(server, N, 60_000);
  out(`  restart: old process gone in ${fmt(downMs, 0)} ms, new one ready after ${fmt(readyMs, 0)} ms`);
  out(
    back99 === undefined
      ? '  time to 99% reconnected: NOT REACHED within 300 s'
      : `  time to 99% reconnected: ${fmt((readyMs + back99) / 1000, 2)} s after the restart began (${fmt(back99 / 1000, 2)} s after the new process was ready); 100% after ${backAll === undefined ? 'n/a' : `${fmt((readyMs + back99 + backAll) / 1000, 2)} s`}`,
  );
}

for (const w of workers) w.send({ op: 'stop' });
await Promise.all(workers.map((w) => new Promise((r) => w.once('exit', r))));
server.child.kill('SIGTERM');
await new Promise((r) => server.child.once('exit', r));
out(`  load average at the end: ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
if (!values['keep-data']) {
  rmSync(dataDir, { recursive: true, force: true });
  await pgDb?.drop();
}
