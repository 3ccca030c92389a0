/**
 * The processes of the agents benchmark: control planes (scripts/bench/agents-server.ts)
 * and workers of simulated agents (scripts/bench/agents-worker.ts), each a node process
 * started through `prlimit --nofile=<hard>:<hard>` when prlimit exists, with an IPC
 * channel to scripts/bench/agents.ts.
 */
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';

const ROOT = join(import.meta.dirname, '..', '..');

export const havePrlimit = existsSync('/usr/bin/prlimit') || existsSync('/bin/prlimit');

/** This process's hard RLIMIT_NOFILE, which the children are given as their soft and hard limit (1024 without prlimit). */
export function hardNofile(): number {
  if (!havePrlimit) return 1024;
  try {
    const out = execFileSync('prlimit', ['--pid', String(process.pid), '--nofile', '--output=HARD', '--noheadings'], { encoding: 'utf8' });
    const n = Number(out.trim());
    return Number.isFinite(n) ? n : 1024;
  } catch {
    return 1024;
  }
}

/** How many local ports connect() picks from (net.ipv4.ip_local_port_range), undefined when unknown. */
export function ephemeralPorts(): number | undefined {
  try {
    const [lo, hi] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    return lo !== undefined && hi !== undefined && hi >= lo ? hi - lo + 1 : undefined;
  } catch {
    return undefined;
  }
}

export function nodeProcess(script: string, env: NodeJS.ProcessEnv, nofile: number, extraNodeArgs: string[] = []): ChildProcess {
  const nodeArgs = [...extraNodeArgs, '--import', 'tsx', join(ROOT, script)];
  const [cmd, args] = havePrlimit
    ? ['prlimit', [`--nofile=${nofile}:${nofile}`, '--', process.execPath, ...nodeArgs]]
    : [process.execPath, nodeArgs];
  return spawn(cmd, args, { cwd: ROOT, env: { ...process.env, ...env }, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
}

export interface Stats {
  rss: number;
  /** heapUsed + external after a full GC: the memory the process still uses, without malloc's retained free space. */
  live: number;
  cpu: NodeJS.CpuUsage;
  /** The hub's heartbeat interval (told to agents in welcome). */
  heartbeatIntervalMs: number;
  hub: { connected: number; handshakesCompleted: number; refusedOverloaded: number; handshakesQueued?: number; refusedPreAuth: number };
  /** accept() failures of the control plane's listener by code (EMFILE: out of descriptors). */
  acceptErrors: Record<string, number>;
}

export interface Fanout {
  agents: number;
  failed: number;
  /** Failed commands by why: error key, and for timeouts whether the command reached the agent (`timed_out`) or not (`expired`). */
  failures: Record<string, number>;
  p50: number;
  p99: number;
  max: number;
  totalMs: number;
  cpuMs: number;
  /** Of cpuMs, the part spent in the kernel (socket writes and reads, epoll, the database file). */
  sysMs: number;
  /** CPU ms by thread name (MainThread, V8Worker for GC and compiler helpers, libuv-worker, …), from /proc's schedstat. */
  threadsMs: Record<string, number>;
  /** Minor page faults during the fan-out (fresh pages the kernel maps and zeroes, e.g. for V8's young generation). */
  minorFaults: number;
  /** Main-thread GC pauses during the fan-out by kind (minor, major, incremental, weakcb): how many, how long. */
  gc: Record<string, { count: number; ms: number }>;
}

export interface ServerHandle {
  child: ChildProcess;
  /** Set once the process exited: its code, or the signal's name. */
  exited: string | undefined;
  /** Rejects if the process exits before it answers. */
  ask<T>(op: string, extra?: Record<string, unknown>): Promise<T>;
}

/** Starts one control-plane process and resolves once it listens. */
export async function startServer(env: NodeJS.ProcessEnv, nofile: number): Promise<ServerHandle> {
  // BENCH_CP_NODE_ARGS: more Node/V8 flags for the control plane only (e.g. `--trace-gc-nvp`,
  // `--max-semi-space-size=32`), for diagnostics; the workers do not get them.
  const extra = (process.env.BENCH_CP_NODE_ARGS ?? '').split(/\s+/).filter(Boolean);
  const child = nodeProcess('scripts/bench/agents-server.ts', env, nofile, ['--expose-gc', ...extra]);
  let next = 0;
  const pending = new Map<number, { resolve: (v: unknown) => void; reject: (err: Error) => void }>();
  const handle: ServerHandle = {
    child,
    exited: undefined,
    ask<T>(op: string, extra: Record<string, unknown> = {}) {
      if (handle.exited !== undefined) return Promise.reject(new Error(`control plane exited (${handle.exited})`));
      const id = next++;
      return new Promise<T>((resolve, reject) => {
        pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
        child.send({ id, op, ...extra });
      });
    },
  };
  child.on('exit', (code, signal) => {
    handle.exited = String(code ?? signal);
    for (const p of pending.values()) p.reject(new Error(`control plane exited (${handle.exited})`));
    pending.clear();
  });
  await new Promise<void>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`control plane exited (${code}) before it was ready`)));
    child.on('message', (m: { ready?: boolean; id?: number }) => {
      if (m.ready) resolve();
      else if (m.id !== undefined) {
        pending.get(m.id)?.resolve(m);
        pending.delete(m.id);
      }
    });
  });
  return handle;
}
