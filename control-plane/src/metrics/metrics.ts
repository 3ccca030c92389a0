import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { HANDSHAKE_REFUSALS } from '../hub/agent-hub.ts';
import type { HubStats } from '../hub/agent-hub.ts';
import type { ChangeEventStats, DatabaseProbe } from './database.ts';
import { withTimeout } from './database.ts';

/**
 * Where the gauges read their values at scrape time: nothing on a hot path moves for
 * them. Each getter answers undefined while its part is not running.
 */
export interface MetricSources {
  hub(): HubStats | undefined;
  shellSessionsOpen(): number | undefined;
  database: DatabaseProbe;
  /** The change-event channels between processes (none on SQLite, or before the services made them). */
  changeEvents?(): Iterable<ChangeEventStats>;
}

/** How a command sent through the bus ended (bounded: the `outcome` label). */
export type CommandOutcomeLabel = 'succeeded' | 'failed' | 'refused' | 'timed_out' | 'expired' | 'aborted' | 'not_connected' | 'error';
/** How a deploy step ended; `interrupted` = the control plane stopped under it (it resumes at the next start). */
export type DeployStepOutcome = 'succeeded' | 'skipped' | 'failed' | 'interrupted';

/**
 * An MCP request for a session another process holds: `forwarded` (proxied to the
 * holder), `holder_unreachable` (its holder did not answer: 404, the client starts
 * again), `refused` (a request posing as a forward whose signature did not verify).
 */
export type McpForwardOutcome = 'forwarded' | 'holder_unreachable' | 'refused';

/**
 * A shell open for an agent another process holds. side `front` (this process relayed
 * it): `opened`, `holder_refused` (the holder answered with an error key, e.g.
 * shell_user_refused), `holder_unreachable`, `timed_out`. side `holder` (this process
 * opened it for another): `opened`, `refused`, `bad_signature` (posed as a relay; 403).
 */
export type ShellRelayLabel =
  | { side: 'front'; outcome: 'opened' | 'holder_refused' | 'holder_unreachable' | 'timed_out' }
  | { side: 'holder'; outcome: 'opened' | 'refused' | 'bad_signature' };

/** The database check made for a scrape may take this long before it counts as down. */
const DB_CHECK_TIMEOUT_MS = 2_000;

// Buckets in seconds, sized for what each measures: a REST call is milliseconds, a
// command to an agent can be a harden (a minute), a deploy step a workflow run (an hour).
const HTTP_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const MCP_BUCKETS = [0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];
const COMMAND_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900];
const DEPLOY_STEP_BUCKETS = [0.1, 0.5, 1, 5, 10, 30, 60, 120, 300, 600, 1800, 3600];

/**
 * This process's metrics in one prom-client registry of its own (not the global one:
 * a test process runs several control planes), every series labelled with node_id.
 */
export class ControlPlaneMetrics {
  readonly registry = new Registry();
  readonly nodeId: string;
  readonly #http: Histogram<'method' | 'route' | 'status_class' | 'channel'>;
  readonly #commands: Histogram<'type' | 'outcome'>;
  readonly #mcpTools: Histogram<'tool' | 'outcome'>;
  readonly #deploySteps: Histogram<'step' | 'outcome'>;
  readonly #mcpForwards: Counter<'outcome'>;
  readonly #shellRelays: Counter<'side' | 'outcome'>;
  #processMetrics = false;
  #checkDatabase: () => Promise<void> = () => Promise.resolve();

  constructor(nodeId: string, sources: MetricSources) {
    this.nodeId = nodeId;
    const registers = [this.registry];
    this.registry.setDefaultLabels({ node_id: nodeId });

    this.#http = new Histogram({
      name: 'vmkit_http_request_duration_seconds',
      help: 'REST requests by route pattern (unmatched for unknown routes), method, status class and channel (rest, mcp: made by an MCP tool, dashboard).',
      labelNames: ['method', 'route', 'status_class', 'channel'],
      buckets: HTTP_BUCKETS,
      registers,
    });
    this.#commands = new Histogram({
      name: 'vmkit_command_duration_seconds',
      help: 'Signed commands sent to agents through the command bus, from send to outcome, by command type and outcome.',
      labelNames: ['type', 'outcome'],
      buckets: COMMAND_BUCKETS,
      registers,
    });
    this.#mcpTools = new Histogram({
      name: 'vmkit_mcp_tool_call_duration_seconds',
      help: 'MCP tool calls by tool and outcome (ok, or the error key the tool answered).',
      labelNames: ['tool', 'outcome'],
      buckets: MCP_BUCKETS,
      registers,
    });
    this.#mcpForwards = new Counter({
      name: 'vmkit_mcp_forwarded_requests_total',
      help: 'MCP requests for a session held by another control-plane process, by outcome (forwarded, holder_unreachable; refused: posed as a forward, signature bad).',
      labelNames: ['outcome'],
      registers,
    });
    this.#shellRelays = new Counter({
      name: 'vmkit_shell_relay_opens_total',
      help: 'Shell opens for an agent held by another control-plane process, by side (front: relayed from here; holder: opened here for another) and outcome.',
      labelNames: ['side', 'outcome'],
      registers,
    });
    this.#deploySteps = new Histogram({
      name: 'vmkit_deploy_step_duration_seconds',
      help: 'Deploy steps run by this process, by step and outcome (interrupted: the process stopped under it).',
      labelNames: ['step', 'outcome'],
      buckets: DEPLOY_STEP_BUCKETS,
      registers,
    });
    this.#hubSeries(sources);
    this.#databaseSeries(sources.database);
    if (sources.changeEvents) this.#changeEventSeries(sources.changeEvents.bind(sources));
    new Gauge({
      name: 'vmkit_shell_sessions_open',
      help: 'Operator shell sessions open on this process (both doors).',
      registers,
      collect() {
        this.set(sources.shellSessionsOpen() ?? 0);
      },
    });
  }

  /** The agent hub's own counters, read at scrape time. */
  #hubSeries(sources: MetricSources): void {
    const registers = [this.registry];
    new Gauge({
      name: 'vmkit_agents_connected',
      help: 'Agents with a live, authenticated connection to this process.',
      registers,
      collect() {
        this.set(sources.hub()?.connected ?? 0);
      },
    });
    new Gauge({
      name: 'vmkit_agent_handshakes_pending',
      help: 'Agent connections between the challenge and a verified hello.',
      registers,
      collect() {
        this.set(sources.hub()?.handshaking ?? 0);
      },
    });
    new Gauge({
      name: 'vmkit_agent_handshakes_queued',
      help: 'Verified agents held in line for a handshake token.',
      registers,
      collect() {
        this.set(sources.hub()?.queued ?? 0);
      },
    });
    new Counter({
      name: 'vmkit_agent_handshakes_queued_total',
      help: 'Verified hellos held in line over the handshake bound instead of refused.',
      registers,
      collect() {
        this.reset();
        this.inc(sources.hub()?.handshakesQueued ?? 0);
      },
    });
    new Counter({
      name: 'vmkit_agent_handshakes_total',
      help: 'Agent handshakes completed (hello verified, agent welcomed).',
      registers,
      collect() {
        this.reset();
        this.inc(sources.hub()?.handshakesCompleted ?? 0);
      },
    });
    new Counter({
      name: 'vmkit_agent_handshake_refusals_total',
      help: 'Agent connections refused before they were welcomed, by reason.',
      labelNames: ['reason'],
      registers,
      collect() {
        const refusals = sources.hub()?.refusals;
        this.reset();
        for (const reason of HANDSHAKE_REFUSALS) this.inc({ reason }, refusals?.[reason] ?? 0);
      },
    });
  }

  /**
   * The database as this scrape finds it: one trivial query timed, migrations pending;
   * the pool and the LISTEN connection only where the data layer has them (PostgreSQL).
   */
  #databaseSeries(probe: DatabaseProbe): void {
    const registers = [this.registry];
    const labels = { dialect: probe.dialect };
    const check = new Gauge({
      name: 'vmkit_db_check_seconds',
      help: 'How long the trivial query of this scrape took.',
      labelNames: ['dialect'],
      registers,
    });
    const up = new Gauge({
      name: 'vmkit_db_up',
      help: '1 when the database answered a trivial query during this scrape, else 0.',
      labelNames: ['dialect'],
      registers,
    });
    const pending = new Gauge({
      name: 'vmkit_db_migrations_pending',
      help: 'Migrations shipped with this build that the database has not applied (-1: could not be read).',
      labelNames: ['dialect'],
      registers,
    });
    // Run before the registry serializes (it reads every metric at once, so one gauge's
    // collect cannot set another's value in time).
    this.#checkDatabase = async () => {
      const started = performance.now();
      try {
        await withTimeout(probe.ping(), DB_CHECK_TIMEOUT_MS, 'the database');
        up.set(labels, 1);
      } catch {
        up.set(labels, 0);
      }
      check.set(labels, (performance.now() - started) / 1000);
      try {
        pending.set(labels, await withTimeout(probe.pendingMigrations(), DB_CHECK_TIMEOUT_MS, 'the database'));
      } catch {
        pending.set(labels, -1);
      }
    };
    const pool = probe.pool?.bind(probe);
    if (pool) {
      new Gauge({
        name: 'vmkit_db_pool_connections',
        help: 'Database pool: connections by state (idle, in_use), queries waiting for one, and the bound (max).',
        labelNames: ['dialect', 'state'],
        registers,
        collect() {
          const p = pool();
          this.set({ ...labels, state: 'idle' }, p.idle);
          this.set({ ...labels, state: 'in_use' }, p.total - p.idle);
          this.set({ ...labels, state: 'waiting' }, p.waiting);
          this.set({ ...labels, state: 'max' }, p.max);
        },
      });
    }
    const notify = probe.notify?.bind(probe);
    if (notify) {
      new Gauge({
        name: 'vmkit_db_notify_listening',
        help: '1 while the LISTEN connection of the command bus is up and subscribed.',
        labelNames: ['dialect'],
        registers,
        collect() {
          this.set(labels, notify().listening ? 1 : 0);
        },
      });
      new Counter({
        name: 'vmkit_db_notify_reconnects_total',
        help: 'Times the LISTEN connection was lost and made again.',
        labelNames: ['dialect'],
        registers,
        collect() {
          this.reset();
          this.inc(labels, notify().reconnects);
        },
      });
      new Counter({
        name: 'vmkit_db_notifications_received_total',
        help: 'NOTIFY payloads received by this process.',
        labelNames: ['dialect'],
        registers,
        collect() {
          this.reset();
          this.inc(labels, notify().received);
        },
      });
    }
  }

  /**
   * The NOTIFY relays that wake long-polls on other processes, one `channel` label each
   * (vmkit_deploy_events, vmkit_rollout_events): read from their own counts at scrape time.
   */
  #changeEventSeries(channels: () => Iterable<ChangeEventStats>): void {
    const registers = [this.registry];
    new Counter({
      name: 'vmkit_db_change_notifies_total',
      help: 'NOTIFYs this process sent for its own changes, by channel and outcome (sent; failed: those long-polls elsewhere answer at wait_ms).',
      labelNames: ['channel', 'outcome'],
      registers,
      collect() {
        this.reset();
        for (const s of channels()) {
          this.inc({ channel: s.channel, outcome: 'sent' }, s.sent);
          this.inc({ channel: s.channel, outcome: 'failed' }, s.failed);
        }
      },
    });
    const perChannel = (name: string, help: string, value: (s: ChangeEventStats) => number): void => {
      new Counter({
        name,
        help,
        labelNames: ['channel'],
        registers,
        collect() {
          this.reset();
          for (const s of channels()) this.inc({ channel: s.channel }, value(s));
        },
      });
    };
    perChannel('vmkit_db_change_notifies_coalesced_total', 'Changes folded into a NOTIFY already under way for the same row, by channel.', (s) => s.coalesced);
    perChannel('vmkit_db_change_notifications_received_total', "Other processes' change notifications heard, by channel.", (s) => s.received);
    perChannel(
      'vmkit_db_change_resyncs_total',
      'Times the LISTEN connection listened (the first time included) and every long-poll waiting on the channel woke to re-read.',
      (s) => s.resyncs,
    );
  }

  /** One REST request answered (the Fastify onResponse hook). */
  httpRequest(method: string, route: string, statusCode: number, channel: string, seconds: number): void {
    this.#http.observe({ method, route, status_class: `${Math.floor(statusCode / 100)}xx`, channel }, seconds);
  }

  commandFinished(type: string, outcome: CommandOutcomeLabel, seconds: number): void {
    this.#commands.observe({ type, outcome }, seconds);
  }

  mcpToolCall(tool: string, outcome: string, seconds: number): void {
    this.#mcpTools.observe({ tool, outcome }, seconds);
  }

  mcpForward(outcome: McpForwardOutcome): void {
    this.#mcpForwards.inc({ outcome });
  }

  shellRelay(label: ShellRelayLabel): void {
    this.#shellRelays.inc(label);
  }

  deployStep(step: string, outcome: DeployStepOutcome, seconds: number): void {
    this.#deploySteps.observe({ step, outcome }, seconds);
  }

  get contentType(): string {
    return this.registry.contentType;
  }

  /**
   * The Prometheus text exposition. Process metrics (CPU, memory, event loop, GC:
   * prom-client's defaults) start with the first scrape, so control planes that are
   * never scraped (tests) add no GC observer or event-loop monitor.
   */
  async render(): Promise<string> {
    if (!this.#processMetrics) {
      this.#processMetrics = true;
      collectDefaultMetrics({ register: this.registry });
    }
    await this.#checkDatabase();
    return this.registry.metrics();
  }
}
