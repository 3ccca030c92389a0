/**
 * The control-plane process of the agents benchmark: the real control plane
 * (startControlPlane, SQLite, Fastify, hub, CommandBus) plus an IPC channel through
 * which scripts/bench/agents.ts asks for figures and triggers ping fan-outs. With
 * several processes on one PostgreSQL database each is a node of the cluster
 * (BENCH_NODE_ID, BENCH_SECRET_KEY_FILE), and a fan-out through one of them is given the
 * ids of agents any of them holds. Not meant to be run by hand.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { constants as perfConstants, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { makeConfig } from '../../control-plane/src/config.ts';
import { AgentCommandError, CommandBusError, CommandTimeoutError } from '../../control-plane/src/hub/errors.ts';
import { startControlPlane } from '../../control-plane/src/server.ts';

interface Request {
  id: number;
  op: 'stats' | 'held' | 'fanout' | 'profile-start' | 'profile-stop';
  /** Where profile-stop writes the profile. */
  file?: string;
  /** Collect garbage first (for RSS figures only: a full GC is expensive). */
  gc?: boolean;
  count?: number;
  /** Fan-out to these agents (held here or by another process) instead of the first `count` held here. */
  ids?: string[];
  /** Each command's timeout (default 60 s). */
  timeoutMs?: number;
}

const dataDir = process.env.BENCH_DATA_DIR ?? '';
const port = Number(process.env.BENCH_PORT ?? '0');
const config = makeConfig({
  dataDir,
  databaseUrl: process.env.VMKIT_DATABASE_URL,
  port,
  host: '127.0.0.1',
  logLevel: 'error',
  ...(process.env.BENCH_NODE_ID && { nodeId: process.env.BENCH_NODE_ID }),
  ...(process.env.BENCH_SECRET_KEY_FILE && { secretKeyFile: process.env.BENCH_SECRET_KEY_FILE }),
});
let profiler: Session | undefined;
const running = await startControlPlane(config);
const { hub, commandBus } = running.ctx;
if (!hub || !commandBus || !process.send) throw new Error('the agents benchmark needs the hub and an IPC channel');
const send = process.send.bind(process);
// accept() failing (EMFILE once the process is out of descriptors) is counted, not a crash:
// it is what stopped the run, and the benchmark says so.
const acceptErrors: Record<string, number> = {};
running.app.server.on('error', (err: NodeJS.ErrnoException) => {
  const code = err.code ?? 'other';
  acceptErrors[code] = (acceptErrors[code] ?? 0) + 1;
});

function pct(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

/** CPU ns so far by thread name, summed over the threads of that name (schedstat's first field). */
function threadCpuNs(): Map<string, number> {
  const byName = new Map<string, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    try {
      const name = readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim();
      const ns = Number(readFileSync(`/proc/self/task/${tid}/schedstat`, 'utf8').split(' ')[0]);
      byName.set(name, (byName.get(name) ?? 0) + ns);
    } catch {
      // The thread ended between the listing and the read: its time is lost to both sides.
    }
  }
  return byName;
}

const GC_KINDS: Record<number, string> = {
  [perfConstants.NODE_PERFORMANCE_GC_MINOR]: 'minor',
  [perfConstants.NODE_PERFORMANCE_GC_MAJOR]: 'major',
  [perfConstants.NODE_PERFORMANCE_GC_INCREMENTAL]: 'incremental',
  [perfConstants.NODE_PERFORMANCE_GC_WEAKCB]: 'weakcb',
};
/** Main-thread GC pauses seen while a fan-out runs; undefined between fan-outs. */
let gcPauses: Record<string, { count: number; ms: number }> | undefined;
new PerformanceObserver((list) => {
  if (!gcPauses) return;
  for (const e of list.getEntries() as (PerformanceEntry & { detail?: { kind?: number } })[]) {
    const kind = GC_KINDS[e.detail?.kind ?? -1] ?? 'other';
    const k = (gcPauses[kind] ??= { count: 0, ms: 0 });
    k.count++;
    k.ms += e.duration;
  }
}).observe({ entryTypes: ['gc'] });

async function fanout(ids: string[], timeoutMs: number) {
  const latencies: number[] = [];
  let failed = 0;
  /** Why commands failed, by error key (and, for timeouts, whether the command ever reached the agent). */
  const failures: Record<string, number> = {};
  const threads0 = threadCpuNs();
  gcPauses = {};
  const faults0 = process.resourceUsage().minorPageFault;
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  await Promise.all(
    ids.map(async (id) => {
      try {
        await commandBus?.send(id, 'ping', {}, { timeoutMs });
        // From the fan-out's start, not this send's: "pinged everyone; how long until 99% answered".
        // (Each send's own start would hide whatever the loop of sends itself spends, e.g. signing.)
        latencies.push(performance.now() - start);
      } catch (err) {
        failed++;
        const why = err instanceof CommandTimeoutError ? `${err.key} (${err.state})` : err instanceof CommandBusError || err instanceof AgentCommandError ? err.key : 'other';
        failures[why] = (failures[why] ?? 0) + 1;
      }
    }),
  );
  const total = performance.now() - start;
  const cpu = process.cpuUsage(cpu0);
  const minorFaults = process.resourceUsage().minorPageFault - faults0;
  const threadsMs: Record<string, number> = {};
  for (const [name, ns] of threadCpuNs()) threadsMs[name] = (ns - (threads0.get(name) ?? 0)) / 1e6;
  // The observer is called after the entries are queued: let it see the fan-out's last GCs.
  await new Promise((r) => setImmediate(r));
  const gc = gcPauses;
  gcPauses = undefined;
  latencies.sort((a, b) => a - b);
  return { agents: ids.length, failed, failures, p50: pct(latencies, 50), p99: pct(latencies, 99), max: latencies.at(-1) ?? NaN, totalMs: total, cpuMs: (cpu.user + cpu.system) / 1000, sysMs: cpu.system / 1000, threadsMs, minorFaults, gc };
}

process.on('message', (raw: Request) => {
  void (async () => {
    if (raw.op === 'stats') {
      if (raw.gc) (globalThis as { gc?: () => void }).gc?.();
      const mem = process.memoryUsage();
      // Live memory after the GC above: V8's heap plus what buffers and native objects hold (external); RSS also keeps freed malloc arenas.
      send({ id: raw.id, rss: mem.rss, live: mem.heapUsed + mem.external, cpu: process.cpuUsage(), heartbeatIntervalMs: hub.heartbeatIntervalMs, hub: hub.stats(), acceptErrors });
    } else if (raw.op === 'held') {
      send({ id: raw.id, ids: hub.connectedAgentIds() });
    } else if (raw.op === 'profile-start') {
      profiler = new Session();
      profiler.connect();
      await profiler.post('Profiler.enable');
      await profiler.post('Profiler.setSamplingInterval', { interval: 200 });
      await profiler.post('Profiler.start');
      send({ id: raw.id });
    } else if (raw.op === 'profile-stop') {
      const res = await profiler?.post('Profiler.stop');
      profiler?.disconnect();
      profiler = undefined;
      if (res && raw.file) writeFileSync(raw.file, JSON.stringify(res.profile));
      send({ id: raw.id });
    } else if (raw.op === 'fanout') {
      const ids = raw.ids ?? hub.connectedAgentIds().slice(0, raw.count ?? 0);
      send({ id: raw.id, ...(await fanout(ids, raw.timeoutMs ?? 60_000)) });
    }
  })();
});

process.once('SIGTERM', () => {
  void running.close().then(() => process.exit(0));
});

send({ ready: true, url: running.url });
