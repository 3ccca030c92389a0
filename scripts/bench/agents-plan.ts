/**
 * The agents benchmark's arguments, checked, and whether the run fits this machine's
 * limits before anything starts: file descriptors per process (each control plane holds
 * one socket per agent it holds, each worker one per agent it simulates) and ephemeral
 * ports (every simulated agent dials from 127.0.0.1, so one control plane's port can be
 * reached from at most that many local ports at once). Pure: scripts/bench/agents.ts
 * reads the limits and prints the refusal.
 */

export interface AgentsBenchArgs {
  agents: string;
  workers: string;
  processes: string;
  'handshakes-per-second': string;
  database: string;
  'skip-restart': boolean;
}

export interface Limits {
  /** The hard RLIMIT_NOFILE every process is started with. */
  nofile: number;
  /** How many local ports connect() may pick from (ip_local_port_range), or undefined when unknown. */
  ephemeralPorts: number | undefined;
}

export interface AgentsBenchPlan {
  agents: number;
  workers: number;
  processes: number;
  handshakesPerSecond: number;
  database: 'sqlite' | 'postgres';
  restart: boolean;
  /** Simulated agents in each worker process (the last may have fewer). */
  perWorker: number;
  /** Agent sockets one control-plane process must be able to hold (its share, plus the spread, plus the restart's move). */
  perProcessAllowance: number;
}

/** Descriptors a process needs besides agent sockets: PostgreSQL pool and LISTEN connection, listener, IPC, log, node's own. */
export const SPARE_FDS = 512;
/**
 * Agents given several URLs go to the next one whenever a dial fails or is refused
 * (`overloaded`), as vmkit-agent does, so the processes do not end up with exactly N/P
 * each: a tenth more is allowed for the spread.
 */
export const SPREAD = 1.1;
/** The most control-plane URLs one agent is given (vmkit-agent's MAX_CONTROL_PLANE_URLS). */
export const MAX_PROCESSES = 8;

function positiveInt(name: string, raw: string): number | string {
  const n = Number(raw);
  return Number.isInteger(n) && n >= 1 ? n : `--${name} must be a whole number ≥ 1, got ${JSON.stringify(raw)}`;
}

/** The checked plan, or the sentence saying why the run cannot go ahead (exit status 2). */
export function planAgentsBench(args: AgentsBenchArgs, limits: Limits): AgentsBenchPlan | { error: string } {
  const agents = positiveInt('agents', args.agents);
  const workers = positiveInt('workers', args.workers);
  const processes = positiveInt('processes', args.processes);
  const hps = positiveInt('handshakes-per-second', args['handshakes-per-second']);
  if (typeof agents === 'string') return { error: agents };
  if (typeof workers === 'string') return { error: workers };
  if (typeof processes === 'string') return { error: processes };
  if (typeof hps === 'string') return { error: hps };
  if (args.database !== 'sqlite' && args.database !== 'postgres') return { error: '--database must be sqlite or postgres' };
  if (processes > 1 && args.database !== 'postgres') {
    return { error: `--processes ${processes} needs --database postgres: several control planes share one PostgreSQL database (on SQLite the control plane is one process)` };
  }
  if (processes > MAX_PROCESSES) return { error: `--processes must be at most ${MAX_PROCESSES} (an agent is given at most ${MAX_PROCESSES} control-plane URLs)` };
  const restart = !args['skip-restart'];
  const perWorker = Math.ceil(agents / Math.min(workers, agents));
  const share = Math.ceil(agents / processes);
  // A restart of one of several processes sends its agents to their next URL: one process may then hold two shares.
  const perProcessAllowance = processes === 1 ? agents : Math.min(agents, restart ? 2 * share : Math.ceil(share * SPREAD));
  const problems: string[] = [];
  if (perProcessAllowance + SPARE_FDS > limits.nofile) {
    const fitting = Math.max(0, limits.nofile - SPARE_FDS);
    problems.push(
      processes === 1
        ? `the control plane would hold ${agents} agent sockets + ${SPARE_FDS} other descriptors, over the limit of ${limits.nofile} file descriptors per process: raise the hard limit (ulimit -Hn), or use --processes with --database postgres`
        : `each control-plane process must be able to hold ${perProcessAllowance} agent sockets (${share} each${restart ? ', twice that after the restart phase moves one process\'s agents to the next' : `, plus ${Math.round((SPREAD - 1) * 100)}% for the spread`}) + ${SPARE_FDS} other descriptors, over the limit of ${limits.nofile} per process (≤ ${fitting} fit): use more --processes${restart ? ' or --skip-restart' : ''}, or raise the hard limit (ulimit -Hn)`,
    );
  }
  if (perWorker + SPARE_FDS > limits.nofile) {
    problems.push(`each worker process would hold ${perWorker} agent sockets + ${SPARE_FDS} other descriptors, over the limit of ${limits.nofile} per process: use at least ${Math.ceil(agents / Math.max(1, limits.nofile - SPARE_FDS))} --workers`);
  }
  if (limits.ephemeralPorts !== undefined && perProcessAllowance > limits.ephemeralPorts) {
    problems.push(`${perProcessAllowance} connections from 127.0.0.1 to one control-plane port need more than the ${limits.ephemeralPorts} local ports of net.ipv4.ip_local_port_range: use more --processes${processes > 1 && restart ? ' or --skip-restart' : ''}`);
  }
  if (problems.length > 0) return { error: problems.join('; ') };
  return { agents, workers, processes, handshakesPerSecond: hps, database: args.database, restart, perWorker, perProcessAllowance };
}
