/**
 * Agent hub benchmark: N simulated agents (real Ed25519 keys, real handshakes, every
 * command verified) spread over several worker processes, against one real
 * control-plane process on this machine, or several on one PostgreSQL database.
 *
 *   node --import tsx scripts/bench/agents.ts [--agents 10000] [--workers 4] [--handshakes-per-second 200] [--fanout-rounds 1]
 *     [--database sqlite|postgres] [--processes 1] [--skip-restart] [--legacy-agents]
 *
 * The simulated agents name the features vmkit-agent names (`queued`, `heartbeat-acks`,
 * `batch-signature`), so a verified agent over the handshake bound waits in line on its
 * connection, result acks ride on heartbeats, and a fan-out's commands share batch signatures (each agent verifies its command's audit path
 * and the signature); `--legacy-agents` leaves the header out, as agents older than those,
 * which are refused `overloaded` and get one signature per command.
 *
 * Prints: time until all agents are connected, control-plane RSS per connected agent,
 * control-plane CPU per handshake, `ping` fan-out latency p50/p99 at 1,000 agents and
 * at N, and the time until 99% are back after a control-plane restart (SIGTERM, then
 * a new process on the same port and data directory).
 *
 * `--processes P` (P > 1, PostgreSQL only) runs P control-plane processes on one database,
 * each a node of the cluster with its own port, data directory and node id, all with the
 * handshake bound given. Every simulated agent is given all P URLs and dials them as
 * vmkit-agent does (agent i first dials process i mod P, then the next URL after every
 * close or refusal). Fan-outs go through the first process to agents held by all of them
 * (the command bus's LISTEN/NOTIFY routing); CPU per command is summed over the processes.
 * Printed per process: agents held, RSS before/after, CPU per handshake; the restart phase
 * restarts the first process; the last line says what limited the run.
 *
 * File descriptors: a control plane holds one socket per agent, each worker N/W. The
 * processes are started through `prlimit --nofile=<hard>:<hard>` (no shell) when
 * prlimit exists, which raises the soft limit to the hard one; otherwise raise
 * `ulimit -n` before running. The benchmark refuses to start when N does not fit
 * (scripts/bench/agents-plan.ts).
 *
 * `--database postgres` runs the control plane on a throwaway PostgreSQL cluster (the
 * tests' own: test/helpers/postgres.ts, initdb in a temporary directory, Unix socket,
 * stopped when this process exits). BENCH_CPU_PROF=<dir> writes one CPU profile of the
 * control plane per phase (connect, the idle fleet, each fan-out) into <dir>, start-up excluded.
 * BENCH_CP_NODE_ARGS="<flags>" gives the control-plane processes more Node/V8 flags.
 */
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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
import { SPARE_FDS, planAgentsBench } from './agents-plan.ts';
import { ephemeralPorts, hardNofile, nodeProcess, startServer } from './agents-processes.ts';
import type { Fanout, ServerHandle, Stats } from './agents-processes.ts';
import { benchSeed } from './agents-seed.ts';

const { values } = parseArgs({
  options: {
    agents: { type: 'string', default: '10000' },
    workers: { type: 'string', default: '4' },
    /** Control-plane processes on one PostgreSQL database (cluster mode). */
    processes: { type: 'string', default: '1' },
    'handshakes-per-second': { type: 'string', default: '200' },
    'keep-data': { type: 'boolean', default: false },
    database: { type: 'string', default: 'sqlite' },
    /** Leave out the restart phase (it takes N / handshakes-per-second and more). */
    'skip-restart': { type: 'boolean', default: false },
    /** Agents that do not send the `queued` feature header (refused `overloaded` instead of held in line). */
    'legacy-agents': { type: 'boolean', default: false },
    /** Fan-outs (to 1,000 and to all) repeated this many times on the same connected fleet: one connect phase, several samples. */
    'fanout-rounds': { type: 'string', default: '1' },
  },
});
const nofile = hardNofile();
const plan = planAgentsBench(values, { nofile, ephemeralPorts: ephemeralPorts() });
if ('error' in plan) {
  process.stderr.write(`bench: ${plan.error}\n`);
  process.exit(2);
}
const rounds = Number(values['fanout-rounds']);
if (!Number.isSafeInteger(rounds) || rounds < 1 || rounds > 100) {
  process.stderr.write(`bench: --fanout-rounds takes a whole number from 1 to 100, not ${values['fanout-rounds']}\n`);
  process.exit(2);
}
/** A fan-out's profile name and the words its line starts with, by round (nothing added with one round). */
const fanoutName = (count: number, round: number) => (rounds > 1 ? `fanout-${count}-${round}` : `fanout-${count}`);
const roundLabel = (round: number) => (rounds > 1 ? ` (round ${round})` : '');
const pgMissing = plan.database === 'postgres' ? postgresMissing() : false;
if (pgMissing) {
  process.stderr.write(`bench: --database postgres cannot run here: ${pgMissing}\n`);
  process.exit(2);
}
const { agents: N, workers: W, processes: P, handshakesPerSecond: HPS } = plan;
const cluster = P > 1;

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((resolve) => srv.listen(0, '127.0.0.1', resolve));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((resolve) => srv.close(() => resolve()));
  return port;
}

// --- seed the database: one workspace, N instances each with an enrolled agent ---
// One data directory per control-plane process; the first one's file key ring is the one
// the database ring adopts, so the seeded agents pin the key every process signs with.
const rootDir = mkdtempSync(join(tmpdir(), 'vmkit-bench-agents-'));
const dataDirs = cluster ? Array.from({ length: P }, (_, i) => join(rootDir, `cp-${i + 1}`)) : [rootDir];
for (const d of dataDirs) mkdirSync(d, { recursive: true, mode: 0o700 });
const secretKeyFile = join(rootDir, 'secret-box.key');
if (cluster) writeFileSync(secretKeyFile, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
const pgDb = plan.database === 'postgres' ? await createTestDatabase() : undefined;
const seedStart = performance.now();
const db = await openDatabase({ dataDir: dataDirs[0] ?? rootDir, databaseUrl: pgDb?.url });
const ring = FileKeyRing.open(dataDirs[0] ?? rootDir);
const ws = await createWorkspace(db, 'bench');
const seeds = Array.from({ length: N }, (_, i) => ({ instanceName: `bench-${i}`, publicKey: encodePublicKey(privateKeyFromSeed(benchSeed(i))) }));
const agentIds = await insertEnrolledAgents(db, ws.id, seeds, ring.published().map((k) => k.key_id));
const agents: [string, number][] = agentIds.map((id, i) => [id, i]);
await closeDatabase(db);
const seedMs = performance.now() - seedStart;

// --- the control-plane processes ---
const ports = await Promise.all(dataDirs.map(() => freePort()));
const nodeIds = dataDirs.map((_, i) => `bench-cp-${i + 1}`);

function startCp(i: number): Promise<ServerHandle> {
  return startServer(
    {
      BENCH_DATA_DIR: dataDirs[i],
      BENCH_PORT: String(ports[i]),
      ...(cluster && { BENCH_NODE_ID: nodeIds[i], BENCH_SECRET_KEY_FILE: secretKeyFile }),
      ...(pgDb && { VMKIT_DATABASE_URL: pgDb.url }),
      VMKIT_AGENT_HANDSHAKES_PER_SECOND: String(HPS),
      // Every simulated agent dials from 127.0.0.1: the per-address pre-auth budget
      // would measure itself, not the hub.
      VMKIT_AGENT_PREAUTH_PER_ADDRESS_PER_SECOND: '1000000',
      VMKIT_AGENT_MAX_PENDING_HANDSHAKES: String(Math.max(5_000, N)),
    },
    nofile,
  );
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Every process's figures; undefined for one that exited. */
async function statsAll(servers: ServerHandle[], gc = false): Promise<(Stats | undefined)[]> {
  return Promise.all(servers.map((s) => s.ask<Stats>('stats', { gc }).catch(() => undefined)));
}
const connectedOf = (all: (Stats | undefined)[]) => all.reduce((sum, s) => sum + (s?.hub.connected ?? 0), 0);

/** When the first agent of the connect phase was seen connected (the workers take a while to start and dial). */
let firstConnectedAt: number | undefined;
let allConnectedAt: number | undefined;

async function waitConnected(servers: ServerHandle[], target: number, timeoutMs: number): Promise<number | undefined> {
  const start = performance.now();
  while (performance.now() - start < timeoutMs) {
    const all = await statsAll(servers);
    const connected = connectedOf(all);
    if (connected > 0 && firstConnectedAt === undefined) firstConnectedAt = performance.now();
    if (connected >= target) {
      allConnectedAt = performance.now();
      return allConnectedAt - start;
    }
    if (servers.every((s) => s.exited !== undefined)) return undefined;
    await sleep(100);
  }
  return undefined;
}

const fmt = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : 'n/a');
const int = (n: number) => Math.round(n).toLocaleString('en-US');
const load = () => loadavg().map((l) => l.toFixed(2)).join(' ');
const cpuMsOf = (c: NodeJS.CpuUsage) => (c.user + c.system) / 1000;
const out = (s: string) => process.stdout.write(`${s}\n`);
/** A fan-out's CPU per command by thread, and its main-thread GC pauses. */
function cpuSplit(f: Fanout): string {
  const per = (ms: number) => fmt((ms / Math.max(1, f.agents)) * 1000, 0);
  const threads = Object.entries(f.threadsMs)
    .filter(([, ms]) => ms >= 0.5)
    .sort((a, b) => b[1] - a[1])
    .map(([name, ms]) => `${name} ${per(ms)}`);
  const gc = Object.entries(f.gc).map(([kind, g]) => `${kind} ${g.count}× ${per(g.ms)}`);
  return `by thread, µs per command: ${threads.join(', ') || 'n/a'}; main-thread GC pauses, µs per command: ${gc.join(', ') || 'none'}; ${fmt(f.minorFaults / Math.max(1, f.agents), 1)} page faults per command`;
}

const profDir = process.env.BENCH_CPU_PROF;
/** Profiles the control planes during one phase when BENCH_CPU_PROF names a directory. */
async function profiled<T>(servers: ServerHandle[], name: string, phase: () => Promise<T>): Promise<T> {
  if (!profDir) return phase();
  await Promise.all(servers.map((s) => s.ask('profile-start')));
  try {
    return await phase();
  } finally {
    await Promise.all(servers.map((s, i) => s.ask('profile-stop', { file: join(profDir, cluster ? `${name}-cp${i + 1}.cpuprofile` : `${name}.cpuprofile`) })));
  }
}

out(
  cluster
    ? `agents benchmark: ${N} simulated agents over ${W} worker processes, ${P} control-plane processes on one ${plan.database} database (each bound ${HPS} handshakes/s, ${P * HPS}/s in all), fd limit ${nofile}`
    : `agents benchmark: ${N} simulated agents over ${W} worker processes, hub bound ${HPS} handshakes/s, fd limit ${nofile}, ${plan.database}`,
);
out(`  machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, load average ${load()} at the start, ${process.version}`);
if (cluster) {
  out(`  file descriptors: each control plane may need ${int(plan.perProcessAllowance)} agent sockets (${int(Math.ceil(N / P))} each, plus the spread${plan.restart ? ' and the restart' : ''}), each worker ${int(plan.perWorker)}, + ${SPARE_FDS} others: fits ${nofile}`);
}
out(`  seeded ${N} instances + agents in ${fmt(seedMs, 0)} ms`);
const servers: ServerHandle[] = [];
for (let i = 0; i < P; i++) servers.push(await startCp(i)); // one after another: the first adopts the seeded key ring
const urls = ports.map((p) => `ws://127.0.0.1:${p}/agent/v1/connect`);
const base = await statsAll(servers, true);

// --- connect everyone at once: the hub paces them with `overloaded` + retry_after_ms ---
interface WorkerReport {
  connected: number;
  errors: Record<string, number>;
  resultAcks?: number;
  heartbeatAcks?: number;
}
const workers: ChildProcess[] = [];
const workerReports: (WorkerReport | undefined)[] = [];
const perWorker = plan.perWorker;
// The workers start (Node, their modules, N/W key pairs) before the clock does; then all dial at once.
const ready: Promise<void>[] = [];
for (let w = 0; w < W; w++) {
  const child = nodeProcess('scripts/bench/agents-worker.ts', {}, nofile);
  ready.push(
    new Promise((resolve, reject) => {
      child.on('message', (m: WorkerReport | { ready: true }) => {
        if ('ready' in m) resolve();
        else workerReports[w] = m;
      });
      child.once('exit', (code) => reject(new Error(`worker ${w} exited (${code}) before it was ready`)));
    }),
  );
  child.send({ op: 'start', urls, agents: agents.slice(w * perWorker, (w + 1) * perWorker), features: !values['legacy-agents'] });
  workers.push(child);
}
await Promise.all(ready);
/** The kernel's count of connections dropped because a listen socket's accept queue was full (machine-wide). */
function listenOverflows(): number | undefined {
  try {
    const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n').filter((l) => l.startsWith('TcpExt:'));
    const [names, numbers] = lines.map((l) => l.split(/\s+/));
    const i = names?.indexOf('ListenOverflows') ?? -1;
    return i > 0 ? Number(numbers?.[i]) : undefined;
  } catch {
    return undefined;
  }
}
const overflowsBefore = listenOverflows();
const connectStart = performance.now();
for (const child of workers) child.send({ op: 'dial' });
const connectTimeoutMs = Math.max(120_000, (N / HPS) * 4_000);
const allMs = await profiled(servers, 'connect', () => waitConnected(servers, N, connectTimeoutMs));
const connectMs = performance.now() - connectStart;
const after = await statsAll(servers, true);
const totalConnected = connectedOf(after);
const sum = (f: (s: Stats) => number, all: (Stats | undefined)[]) => all.reduce((acc, s) => acc + (s ? f(s) : 0), 0);
const handshakes = sum((s) => s.hub.handshakesCompleted, after) - sum((s) => s.hub.handshakesCompleted, base);
const overloadedAnswers = sum((s) => s.hub.refusedOverloaded, after);
const queuedHellos = sum((s) => s.hub.handshakesQueued ?? 0, after);
const preAuthRefusals = sum((s) => s.hub.refusedPreAuth, after);
const overflowsAfter = listenOverflows();
const dropped = overflowsBefore === undefined || overflowsAfter === undefined ? 'n/a' : String(overflowsAfter - overflowsBefore);
out(
  allMs === undefined
    ? `  time to all connected: NOT REACHED (${totalConnected}/${N} after ${fmt(connectMs / 1000)} s)`
    : `  time to all connected: ${fmt(allMs / 1000, 2)} s (${fmt((N / allMs) * 1000, 0)} handshakes/s${cluster ? ' in all' : ''}; ${overloadedAnswers} overloaded answers, ${queuedHellos} held in line, ${preAuthRefusals} refused before the upgrade; ${dropped} dials dropped by the kernel at a full accept queue)`,
);
if (allConnectedAt !== undefined && firstConnectedAt !== undefined) {
  // The figure above counts the workers' own start (a Node process each, tsx, N key pairs) and their first dials.
  const paced = allConnectedAt - firstConnectedAt;
  out(`  from the first agent seen connected (polled every 100 ms) to the last: ${fmt(paced / 1000, 2)} s (${fmt(((N - 1) / paced) * 1000, 0)} handshakes/s)`);
}
if (!cluster) {
  const [b, a] = [base[0], after[0]];
  if (!a || !b) throw new Error('the control plane exited during the connect phase');
  const cpuMs = cpuMsOf(a.cpu) - cpuMsOf(b.cpu);
  out(`  control-plane RSS: ${fmt(b.rss / 2 ** 20)} MiB idle, ${fmt(a.rss / 2 ** 20)} MiB with ${a.hub.connected} agents → ${fmt((a.rss - b.rss) / Math.max(1, a.hub.connected) / 1024)} KiB per agent`);
  out(`  control-plane live memory (heap + external, after GC): ${fmt(b.live / 2 ** 20)} MiB idle, ${fmt(a.live / 2 ** 20)} MiB with them → ${fmt((a.live - b.live) / Math.max(1, a.hub.connected) / 1024)} KiB per agent`);
  out(`  load average after connecting: ${load()}`);
  out(`  control-plane CPU during the connect phase: ${fmt(cpuMs / Math.max(1, handshakes) * 1000, 0)} µs per completed handshake (all work incl. refusals, DB writes, pings)`);
} else {
  let cpuAll = 0;
  for (let i = 0; i < P; i++) {
    const [b, a] = [base[i], after[i]];
    if (!a || !b) {
      out(`  control plane ${i + 1}: EXITED (${servers[i]?.exited ?? '?'})`);
      continue;
    }
    const hs = a.hub.handshakesCompleted - b.hub.handshakesCompleted;
    const cpuMs = cpuMsOf(a.cpu) - cpuMsOf(b.cpu);
    cpuAll += cpuMs;
    out(
      `  control plane ${i + 1}: ${int(a.hub.connected)} agents held; RSS ${fmt(b.rss / 2 ** 20)} MiB idle, ${fmt(a.rss / 2 ** 20)} MiB with them → ${fmt((a.rss - b.rss) / Math.max(1, a.hub.connected) / 1024)} KiB per agent (live ${fmt((a.live - b.live) / Math.max(1, a.hub.connected) / 1024)} KiB); CPU ${fmt((cpuMs / Math.max(1, hs)) * 1000, 0)} µs per handshake (${int(hs)} handshakes, ${int(a.hub.refusedOverloaded)} overloaded answers)`,
    );
  }
  out(`  control planes together: ${fmt((cpuAll / Math.max(1, handshakes)) * 1000, 0)} µs CPU per completed handshake (all work incl. refusals, DB writes, pings)`);
  out(`  load average after connecting: ${load()}`);
}

// --- ping fan-out through the CommandBus ---
if (!cluster) {
  const server = servers[0];
  if (!server) throw new Error('no control plane');
  // What the connected fleet costs with nothing asked of it (heartbeats, pings, last_seen
  // writes), measured over a few seconds: the fan-out's CPU includes that much of it too.
  const IDLE_MS = 3_000;
  const { i0, i1, t0 } = await profiled(servers, 'idle', async () => {
    const i0 = await server.ask<Stats>('stats');
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, IDLE_MS));
    return { i0, i1: await server.ask<Stats>('stats'), t0 };
  });
  const idleMsPerS = ((cpuMsOf(i1.cpu) - cpuMsOf(i0.cpu)) / (performance.now() - t0)) * 1000;
  const heartbeatsPerS = i1.hub.connected / (i1.heartbeatIntervalMs / 1000);
  out(
    `  the idle fleet: ${fmt(idleMsPerS)} ms control-plane CPU per second with ${i1.hub.connected} agents connected (a heartbeat from each every ${fmt(i1.heartbeatIntervalMs / 1000, 0)} s: ${fmt((idleMsPerS / Math.max(1, heartbeatsPerS)) * 1000, 0)} µs per heartbeat)`,
  );
  for (let round = 1; round <= rounds; round++) {
    for (const count of [...new Set([Math.min(1000, N), N])]) {
      const f = await profiled(servers, fanoutName(count, round), () => server.ask<Fanout>('fanout', { count }));
      const net = (f.cpuMs - (idleMsPerS * f.totalMs) / 1000) / Math.max(1, f.agents) * 1000;
      out(
        `  ping fan-out${roundLabel(round)} to ${f.agents} agents: p50 ${fmt(f.p50)} ms, p99 ${fmt(f.p99)} ms, max ${fmt(f.max)} ms, all done in ${fmt(f.totalMs)} ms, ${f.failed} failed, CP CPU ${fmt(f.cpuMs / Math.max(1, f.agents) * 1000, 0)} µs per command (${fmt(net, 0)} µs net of the idle fleet's; ${fmt(f.sysMs / Math.max(1, f.agents) * 1000, 0)} µs of it in the kernel)`,
      );
      out(`    ${cpuSplit(f)}`);
    }
  }
} else {
  // Through the first process to agents every process holds, taken in turn from each so
  // that the 1,000 are spread like the whole fleet.
  const held = await Promise.all(servers.map((s) => s.ask<{ ids: string[] }>('held').then((r) => r.ids).catch(() => [] as string[])));
  const total = held.reduce((n, ids) => n + ids.length, 0);
  const through = servers[0];
  if (!through) throw new Error('no control plane');
  // The same agents in every round.
  const picks = [...new Set([Math.min(1000, total), total])].map((count) => {
    const picked: string[] = [];
    const byProcess = held.map(() => 0);
    for (let k = 0; picked.length < count; k++) {
      held.forEach((ids, i) => {
        const id = ids[k];
        if (id !== undefined && picked.length < count) {
          picked.push(id);
          byProcess[i] = (byProcess[i] ?? 0) + 1;
        }
      });
    }
    return { count, picked, byProcess };
  });
  for (let round = 1; round <= rounds; round++) {
    for (const { count, picked, byProcess } of picks) {
      const before = await statsAll(servers);
      const f = await profiled(servers, fanoutName(count, round), () => through.ask<Fanout>('fanout', { ids: picked, timeoutMs: Math.max(60_000, count * 10) }));
      const done = await statsAll(servers);
      const cpu = servers.map((_, i) => {
        const [b, a] = [before[i], done[i]];
        return a && b ? cpuMsOf(a.cpu) - cpuMsOf(b.cpu) : NaN;
      });
      const perCommand = (ms: number) => fmt((ms / Math.max(1, f.agents)) * 1000, 0);
      out(
        `  ping fan-out${roundLabel(round)} through control plane 1 to ${f.agents} agents (held by ${byProcess.map((n, i) => `${i + 1}: ${n}`).join(', ')}): p50 ${fmt(f.p50)} ms, p99 ${fmt(f.p99)} ms, max ${fmt(f.max)} ms, all done in ${fmt(f.totalMs)} ms, ${f.failed} failed${f.failed > 0 ? ` (${Object.entries(f.failures).map(([k, n]) => `${k} ×${n}`).join(', ')})` : ''}, CP CPU ${perCommand(cpu.reduce((a, b) => a + b, 0))} µs per command summed over ${P} processes (${cpu.map((ms, i) => `${i + 1}: ${perCommand(ms)}`).join(', ')})`,
      );
      out(`    control plane 1 ${cpuSplit(f)}`);
    }
  }
}

// --- restart: SIGTERM (graceful: agents told 1001, marked disconnected), new process, same port ---
if (plan.restart) {
  const first = servers[0];
  if (!first) throw new Error('no control plane');
  const killAt = performance.now();
  first.child.kill('SIGTERM');
  if (first.exited === undefined) await new Promise((r) => first.child.once('exit', r));
  const downMs = performance.now() - killAt;
  servers[0] = await startCp(0);
  const readyMs = performance.now() - killAt;
  const back99 = await waitConnected(servers, Math.ceil(N * 0.99), 300_000);
  const backAll = await waitConnected(servers, N, 60_000);
  out(`  restart${cluster ? ' of control plane 1' : ''}: old process gone in ${fmt(downMs, 0)} ms, new one ready after ${fmt(readyMs, 0)} ms`);
  out(
    back99 === undefined
      ? '  time to 99% reconnected: NOT REACHED within 300 s'
      : `  time to 99% reconnected: ${fmt((readyMs + back99) / 1000, 2)} s after the restart began (${fmt(back99 / 1000, 2)} s after the new process was ready); 100% after ${backAll === undefined ? 'n/a' : `${fmt((readyMs + back99 + backAll) / 1000, 2)} s`}`,
  );
  if (cluster) out(`  agents held after the restart: ${(await statsAll(servers)).map((s, i) => `${i + 1}: ${s ? int(s.hub.connected) : 'exited'}`).join(', ')}`);
}

// --- what limited the run (several processes): descriptors, ports, CPU/time ---
if (cluster) {
  const final = await statsAll(servers);
  const largest = Math.max(...final.map((s) => s?.hub.connected ?? 0));
  const reasons: string[] = [];
  servers.forEach((s, i) => {
    if (s.exited !== undefined) reasons.push(`control plane ${i + 1} exited (${s.exited})`);
    const errs = Object.entries(final[i]?.acceptErrors ?? {});
    if (errs.length > 0) reasons.push(`control plane ${i + 1} failed accept(): ${errs.map(([c, n]) => `${c} ×${n}`).join(', ')}`);
  });
  const dialErrors: Record<string, number> = {};
  for (const r of workerReports) for (const [c, n] of Object.entries(r?.errors ?? {})) dialErrors[c] = (dialErrors[c] ?? 0) + n;
  const dial = Object.entries(dialErrors).map(([c, n]) => `${c} ×${n}`).join(', ');
  const room = `${int(nofile - SPARE_FDS)} agent sockets per process fit the fd limit ${nofile}; the largest control plane held ${int(largest)}, each worker ${int(perWorker)}`;
  if (allMs === undefined) {
    if (dial) reasons.push(`the simulated agents' dials failed: ${dial}`);
    if (reasons.length === 0) reasons.push(`time: the connect phase's ${fmt(connectTimeoutMs / 1000, 0)} s ran out (CPU of this machine, load average ${load()})`);
    out(`  limit: NOT all connected — ${reasons.join('; ')}; ${room}`);
  } else {
    out(`  limit: no descriptor or port limit reached, all ${N} connected${reasons.length > 0 ? ` (${reasons.join('; ')})` : ''}${dial ? ` (dial errors on the way: ${dial})` : ''}; ${room}`);
  }
}

for (const w of workers) w.send({ op: 'stop' });
await Promise.all(workers.map((w) => new Promise((r) => w.once('exit', r))));
{
  const acked = (k: 'resultAcks' | 'heartbeatAcks') => workerReports.reduce((n, r) => n + (r?.[k] ?? 0), 0);
  // Acks on heartbeats reach each agent with its next heartbeat (within one interval), so a
  // count taken soon after the fan-out is short of the commands by those still to come.
  out(`  results acknowledged to the agents by now: ${acked('resultAcks')} by result_ack frame, ${acked('heartbeatAcks')} on hub heartbeats`);
}
for (const s of servers) {
  if (s.exited !== undefined) continue;
  s.child.kill('SIGTERM');
  await new Promise((r) => s.child.once('exit', r));
}
out(`  load average at the end: ${load()}`);
if (!values['keep-data']) {
  rmSync(rootDir, { recursive: true, force: true });
  await pgDb?.drop();
}
