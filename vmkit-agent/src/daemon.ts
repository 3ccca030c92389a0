import { hostname } from 'node:os';
import { PROTOCOL_VERSION, pinKeys } from '@vmkit/protocol';
import { ConfigError, loadConfig, saveConfig } from './config.ts';
import type { AgentConfig, PinnedKey } from './config.ts';
import { AgentConnection } from './connection.ts';
import { DEFAULT_BACKOFF } from './backoff.ts';
import { CommandDispatcher, toResult } from './dispatcher.ts';
import { defaultExecutors } from './executors/index.ts';
import type { ExecutorRegistry, KeyRing } from './executors/index.ts';
import { clearHardenJournal, recoverHardenAtStart } from './executors/harden/index.ts';
import type { HardenEnv } from './executors/harden/index.ts';
import { execTool } from './executors/harden/exec.ts';
import { defaultPaths } from './executors/harden/types.ts';
import { osDescription } from './host.ts';
import { ResultJournal } from './journal.ts';
import { createLogger } from './log.ts';
import type { Logger } from './log.ts';
import { DaemonLock } from './lock.ts';
import { StatusFile } from './status.ts';
import { loadAgentKey, prepareStateDir, statePaths } from './state-dir.ts';
import { isLocalHost } from './transport-policy.ts';
import { checkDialUrls, dialUrls, downloadBases } from './control-planes.ts';
import { trustCaFile } from './trust.ts';
import { CommandVerifier } from './verify.ts';
import { shellLimits } from './executors/shell/config.ts';
import { ShellSessions } from './executors/shell/sessions.ts';
import { AGENT_VERSION, BUILD_FAULT } from './version.ts';
import { platformOf } from '@vmkit/protocol';
import { confirmUpdate, removeMarker, rollBack, updateAtStart } from './update/start.ts';
import type { UpdateAtStart } from './update/start.ts';

export interface DaemonOptions {
  configFile: string;
  stateDir?: string;
  insecure: boolean;
  log?: Logger;
  executors?: ExecutorRegistry;
  /**
   * Crash tests only (`run --test-stop-at-harden-steps`): the daemon stops itself with
   * SIGSTOP at every journaled harden step boundary, so a test can SIGKILL it exactly
   * there or SIGCONT it. Never set by the systemd unit or the installer.
   */
  testStopAtHardenSteps?: boolean;
  /**
   * The daemon must be started again (an agent.update switched `current`, or a rollback
   * did): the CLI stops it and exits with EXIT_RESTART for systemd or the restart loop.
   */
  onRestartRequested?(reason: string): void;
}

/** Exit status asking the supervisor to start the agent again (EX_TEMPFAIL). */
export const EXIT_RESTART = 75;

/** This start rolled an update back (or finished one): the other version must start instead. */
export class RestartRequired extends Error {
  override readonly name = 'RestartRequired';
}

/** The default window in which a new version must connect. */
export const DEFAULT_CONFIRM_WITHIN_MS = 120_000;

export interface RunningDaemon {
  /** The daemon's logger: --log-level when given, else the config's log_level, else info. */
  log: Logger;
  stop(): Promise<void>;
}

const PRUNE_EVERY_MS = 60_000;
const DRAIN_MS = 10_000;

/** Pinned keys backed by the config file: keys.rotate writes it before using the new set. */
class ConfigKeyRing implements KeyRing {
  #config: AgentConfig;
  readonly #file: string;
  readonly #onChange: (keys: PinnedKey[]) => void;

  constructor(file: string, config: AgentConfig, onChange: (keys: PinnedKey[]) => void) {
    this.#file = file;
    this.#config = config;
    this.#onChange = onChange;
  }

  keyIds(): string[] {
    return this.#config.signing_keys.map((k) => k.key_id);
  }

  list(): PinnedKey[] {
    return this.#config.signing_keys.map((k) => ({ ...k }));
  }

  async replace(keys: PinnedKey[]): Promise<void> {
    pinKeys(keys); // throws on a key whose id does not match
    const next = { ...this.#config, signing_keys: keys };
    await saveConfig(this.#file, next);
    this.#config = next;
    this.#onChange(keys);
  }
}

/** The crash-test hook: say where, then stop this process until SIGCONT (or SIGKILL). */
function stopAtBoundary(log: Logger): (step: string) => void {
  return (step) => {
    log.warn('test stop at harden step boundary', { step, pid: process.pid });
    process.kill(process.pid, 'SIGSTOP');
  };
}

/** `vmkit-agent run`: loads config and state, then keeps the connection up until SIGTERM. */
export async function startDaemon(opts: DaemonOptions): Promise<RunningDaemon> {
  const config = await loadConfig(opts.configFile);
  const log = opts.log ?? createLogger(config.log_level ?? 'info');
  const insecure = opts.insecure || config.insecure === true;
  const transport = checkDialUrls(config, insecure);
  if (!transport.ok) throw new ConfigError(`${transport.field} in ${opts.configFile}: ${transport.reason}`);
  const urls = dialUrls(config);
  // Before anything dials: wss:// and https:// trust the configured CA only.
  if (config.ca_file !== undefined) await trustCaFile(config.ca_file, `ca_file in ${opts.configFile}:`);
  const stateDir = opts.stateDir ?? config.state_dir;
  const agentKey = await loadAgentKey(statePaths(stateDir));
  const paths = await prepareStateDir(stateDir);
  // One daemon per state directory: two would share a replay cache and a journal.
  const lock = await DaemonLock.acquire(paths.lock);
  // An update in flight decides first: it may roll back and ask for a restart before anything runs.
  let update: UpdateAtStart;
  try {
    update = await updateAtStart(paths.update, AGENT_VERSION, log);
  } catch (err) {
    await lock.release();
    throw err;
  }
  if (update.kind === 'restart') {
    await lock.release();
    throw new RestartRequired(`update to ${update.marker.to_version} rolled back to ${update.marker.from_version}: ${update.marker.reason ?? ''}`);
  }
  const updateCommandId = update.kind === 'none' ? undefined : update.marker.command_id;
  const verifier = await CommandVerifier.open(paths.replay, config.agent_id, config.signing_keys);
  // Logged only once the configuration passed, so a config error stays one line.
  if (insecure) {
    log.warn('INSECURE mode: plain ws:// is accepted towards any address; command results and shell traffic can be read on the way', {
      connect_urls: urls,
    });
  } else {
    const local = transport.urls.filter((u) => u.protocol === 'ws:' && isLocalHost(u.hostname)).map((u) => u.href);
    if (local.length > 0) log.info('plain ws:// towards a local address', { connect_urls: local });
  }
  // A harden killed half-way is rolled back (or completed) before anything else runs,
  // and its outcome becomes the interrupted command's result.
  const recovery = await recoverHardenAtStart({ dir: paths.harden, paths: defaultPaths('/'), exec: execTool, reload: 'auto' }, log);
  const journal = await ResultJournal.open(paths.journal, log, Date.now(), (id) => {
    if (id === updateCommandId) return update.kind === 'report' ? toResult(id, update.outcome) : 'pending';
    if (recovery?.commandId !== id) return undefined;
    const o = recovery.outcome;
    return toResult(id, o.ok ? { status: 'succeeded', output: o.output } : { status: 'failed', error: o.error ?? { key: 'command_interrupted', message: recovery.reason }, output: o.output });
  });
  if (recovery) await clearHardenJournal(paths.harden);
  if (update.kind === 'report') {
    log.info('update outcome journaled', { command_id: update.marker.command_id, version: AGENT_VERSION, attempted: update.marker.to_version });
    await removeMarker(paths.update);
  }
  const hardenEnv: HardenEnv = {
    journalDir: paths.harden,
    ...(opts.testStopAtHardenSteps === true ? { onBoundary: stopAtBoundary(log) } : {}),
  };
  const keys = new ConfigKeyRing(opts.configFile, config, (k) => {
    verifier.setPinnedKeys(k);
    status.update({ pinned_keys: k.map((x) => x.key_id) });
  });
  const startedAt = Date.now();
  const status = new StatusFile(
    paths.status,
    {
      pid: process.pid,
      state: 'starting',
      state_since: startedAt,
      agent_id: config.agent_id,
      instance_id: config.instance_id,
      connect_url: config.connect_url,
      agent_version: AGENT_VERSION,
      protocol_version: PROTOCOL_VERSION,
      node_version: process.version,
      started_at: startedAt,
      updated_at: startedAt,
      insecure,
      pinned_keys: keys.keyIds(),
      unacked_results: journal.unacked().length,
    },
    log,
  );
  status.update({});

  const abort = new AbortController();
  // eslint-disable-next-line prefer-const -- the dispatcher and the connection refer to each other
  let connection: AgentConnection;
  const shell = new ShellSessions({
    limits: shellLimits(config.shell),
    send: (f) => connection.sendBinary(f),
    reportInvalid: (message) => connection.send({ protocol: PROTOCOL_VERSION, type: 'error', key: 'invalid_request', message }),
    log,
  });
  const dispatcher = new CommandDispatcher({
    verifier,
    journal,
    executors:
      opts.executors ??
      defaultExecutors({
        harden: hardenEnv,
        shell,
        update: {
          markerFile: paths.update,
          controlPlaneUrls: downloadBases(config),
          confirmWithinMs: config.update?.confirm_within_ms ?? DEFAULT_CONFIRM_WITHIN_MS,
          version: AGENT_VERSION,
          execPath: process.execPath,
          platform: platformOf(process.platform, process.arch),
        },
      }),
    onDeferred: (command) => opts.onRestartRequested?.(`${command.type} ${command.id}`),
    keys,
    log,
    send: (m) => connection.send(m),
    signal: abort.signal,
    onCommandFinished: (r, type) => {
      // The result is journaled now: the harden journal has served its purpose.
      if (type === 'harden') clearHardenJournal(paths.harden).catch(fail('clearing the harden journal failed'));
      status.update({
        last_command: { id: r.command_id, type, status: r.status, ...(r.error ? { error: r.error.key } : {}), finished_at: r.finished_at },
        unacked_results: journal.unacked().length,
      });
    },
  });
  const fail = (what: string) => (err: unknown) => log.error(what, { error: (err as Error).message });

  connection = new AgentConnection({
    urls,
    agentId: config.agent_id,
    agentKey,
    hostname: hostname().slice(0, 253),
    os: await osDescription(),
    agentVersion: AGENT_VERSION,
    backoff: { baseMs: config.reconnect?.base_ms ?? DEFAULT_BACKOFF.baseMs, capMs: config.reconnect?.cap_ms ?? DEFAULT_BACKOFF.capMs },
    stableMs: config.reconnect?.stable_ms ?? 30_000,
    handshakeTimeoutMs: config.reconnect?.handshake_timeout_ms ?? 15_000,
    log,
    onWelcome: (w) => {
      const pinned = new Set(keys.keyIds());
      const unknown = w.signing_keys.filter((k) => !pinned.has(k.key_id)).map((k) => k.key_id);
      // New keys are learnt only through keys.rotate signed by a pinned key, never from a welcome.
      if (unknown.length > 0) log.info('the hub announces keys that are not pinned; waiting for keys.rotate', { key_ids: unknown });
      dispatcher.resendUnacked();
    },
    onMessage: (m) => {
      if (m.type === 'command') dispatcher.handleCommand(m).catch(fail('command handling failed'));
      else if (m.type === 'result_ack' || m.type === 'heartbeat') {
        // A heartbeat here carries `result_acks`: the same as that many result_ack frames.
        const ids = m.type === 'result_ack' ? [m.command_id] : (m.result_acks ?? []);
        Promise.all(ids.map((id) => dispatcher.handleResultAck(id)))
          .then(() => status.update({ unacked_results: journal.unacked().length }))
          .catch(fail('result_ack handling failed'));
      }
    },
    onBinary: (frame) => shell.handleFrame(frame),
    onState: (state, info) => {
      if (state === 'connected') confirmOnce();
      // Sessions live on one connection: when it drops, their process groups go.
      if (state !== 'connected' && state !== 'handshaking') shell.disconnected();
      status.update({
        state,
        ...(info.url !== undefined ? { connect_url: info.url } : {}),
        ...(state === 'connected' ? { last_connected_at: Date.now(), heartbeat_interval_ms: info.heartbeatMs } : {}),
        ...(info.nextRetryAt !== undefined ? { next_retry_at: info.nextRetryAt } : {}),
        ...(info.error !== undefined ? { last_error: info.error } : {}),
      });
    },
  });

  // The new version of an update: confirmed at its first connection, rolled back if the window ends first.
  let settled = update.kind !== 'confirming';
  let confirmTimer: NodeJS.Timeout | undefined;
  const confirmOnce = (): void => {
    if (settled || update.kind !== 'confirming') return;
    settled = true;
    clearTimeout(confirmTimer);
    const marker = update.marker;
    void (async () => {
      await dispatcher.finish(marker.command_id, 'agent.update', await confirmUpdate(paths.update, marker, log));
      await removeMarker(paths.update);
    })().catch(fail('confirming the update failed'));
  };
  if (update.kind === 'confirming') {
    const marker = update.marker;
    log.info('running a new version on probation', { version: AGENT_VERSION, previous: marker.from_version, confirm_by: new Date(marker.confirm_by).toISOString(), start: marker.starts });
    confirmTimer = setTimeout(() => {
      if (settled) return;
      settled = true;
      rollBack(paths.update, marker, `it did not connect within ${marker.confirm_by - marker.switched_at} ms`, log).then(
        () => opts.onRestartRequested?.('update rolled back'),
        fail('rolling the update back failed'),
      );
    }, Math.max(0, marker.confirm_by - Date.now()));
  }

  const pruneTimer = setInterval(() => {
    const now = Date.now();
    Promise.all([verifier.prune(now), journal.prune(now)]).catch(fail('pruning failed'));
  }, PRUNE_EVERY_MS);
  pruneTimer.unref();

  log.info('vmkit-agent starting', {
    version: AGENT_VERSION,
    agent_id: config.agent_id,
    connect_urls: urls,
    ...(config.ca_file !== undefined ? { ca_file: config.ca_file } : {}),
    state_dir: stateDir,
    pinned_keys: keys.keyIds(),
    unacked_results: journal.unacked().length,
  });
  // A test build that must look like a broken release (update rollback tests).
  if (BUILD_FAULT === 'never-connect') log.warn('test build with fault never-connect: not dialing the control plane');
  else connection.start();

  return {
    log,
    async stop() {
      clearInterval(pruneTimer);
      clearTimeout(confirmTimer);
      // Running commands get a bounded grace period (the unit allows 15 s) to finish,
      // journal and even send their result before the socket closes.
      if (!(await dispatcher.drain(DRAIN_MS))) log.warn('commands still running at stop; they will be reported interrupted');
      abort.abort();
      shell.disconnected();
      await connection.stop();
      await status.flushed();
      await lock.release();
    },
  };
}
