import { parseArgs } from 'node:util';
import { PROTOCOL_VERSION } from '@vmkit/protocol';
import { ConfigError, DEFAULT_CONFIG_FILE, DEFAULT_STATE_DIR, EXIT_CONFIG, loadConfig } from './config.ts';
import { EXIT_RESTART, RestartRequired, startDaemon } from './daemon.ts';
import { EnrollError, enroll } from './enroll.ts';
import { hardenCli } from './executors/harden/cli.ts';
import { DaemonLockError } from './lock.ts';
import { createLogger, isLevel } from './log.ts';
import { processAlive, readStatus } from './status.ts';
import { statePaths } from './state-dir.ts';
import { systemdUnit } from './unit.ts';
import { AGENT_VERSION } from './version.ts';

const USAGE = `usage: vmkit-agent <command> [options]

commands:
  enroll --url URL [--url URL ...] --token TOKEN [--cp-key KEY_ID:PUBKEY ...]
         [--ca-file PEM] [--insecure] [--force] [--ssh-host-key-dir DIR]
                 (or VMKIT_CONTROL_PLANE_URL / VMKIT_ENROLLMENT_TOKEN in the environment)
                 register this machine with the control plane and pin its signing keys;
                 several --url: processes of one fleet, asked in turn, all dialled in turn;
                 --ca-file: trust this CA (instead of the system's) for https:// and wss://;
                 reports the SSH host public keys in DIR (default /etc/ssh) for deploys to pin
  run [--insecure] [--log-level debug|info|warn|error]
                     run the daemon (systemd runs this)
      [--test-stop-at-harden-steps]
                     crash tests only: SIGSTOP at every harden step boundary
  status [--json]    connection state, agent id, last command, versions
  version            print the agent and protocol versions
  print-unit         print the systemd unit this release was built with
  harden --dry-run [--deploy-key KEY ...] [--root DIR] [--json]
                     print what the harden command would change (changes nothing)

options for every command:
  --config FILE      agent config (default ${DEFAULT_CONFIG_FILE})
  --state-dir DIR    keys, replay cache, journal, status (default ${DEFAULT_STATE_DIR},
                     or the one recorded at enrollment)
`;

const EXIT_USAGE = 2;
/** `status` when the daemon is not connected (like systemctl is-active). */
const EXIT_NOT_CONNECTED = 3;

class UsageError extends Error {}

function fail(message: string, code: number): never {
  process.stderr.write(`vmkit-agent: ${message.replace(/\s*\n\s*/g, ' ')}\n`);
  process.exit(code);
}

function parse(argv: string[]) {
  try {
    return parseArgs({
      args: argv,
      allowPositionals: true,
      strict: true,
      options: {
        url: { type: 'string', multiple: true },
        'ca-file': { type: 'string' },
        token: { type: 'string' },
        'cp-key': { type: 'string', multiple: true },
        'ssh-host-key-dir': { type: 'string' },
        config: { type: 'string' },
        'state-dir': { type: 'string' },
        insecure: { type: 'boolean' },
        force: { type: 'boolean' },
        json: { type: 'boolean' },
        'log-level': { type: 'string' },
        // Crash tests only (see startDaemon); the systemd unit never passes it.
        'test-stop-at-harden-steps': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
}

function when(ms: number | undefined): string {
  return ms === undefined ? '-' : new Date(ms).toISOString();
}

async function status(configFile: string, stateDirFlag: string | undefined, json: boolean): Promise<number> {
  const config = await loadConfig(configFile);
  const stateDir = stateDirFlag ?? config.state_dir;
  const s = await readStatus(statePaths(stateDir).status);
  const running = s !== undefined && s.state !== 'stopped' && processAlive(s.pid);
  const state = s === undefined ? 'not running (no status yet)' : running ? s.state : `not running (last state ${s.state})`;
  if (json) {
    process.stdout.write(`${JSON.stringify({ running, agent_id: config.agent_id, instance_id: config.instance_id, status: s ?? null }, null, 2)}\n`);
  } else {
    const lines: [string, string][] = [
      ['agent', config.agent_id],
      ['instance', config.instance_id],
      ['control plane', running && s ? s.connect_url : [config.connect_url, ...(config.connect_urls ?? [])].join(', ')],
      ['state', `${state}${s && running ? ` since ${when(s.state_since)} (pid ${s.pid})` : ''}`],
    ];
    if (config.ca_file !== undefined) lines.push(['trusted CA', config.ca_file]);
    if (s?.state === 'waiting' && running) lines.push(['next attempt', when(s.next_retry_at)]);
    if (s?.last_error) lines.push(['last error', s.last_error]);
    if (s?.last_connected_at) lines.push(['last connected', when(s.last_connected_at)]);
    lines.push([
      'last command',
      s?.last_command ? `${s.last_command.id} ${s.last_command.type} ${s.last_command.status}${s.last_command.error ? ` (${s.last_command.error})` : ''} at ${when(s.last_command.finished_at)}` : 'none',
    ]);
    lines.push(['unacked results', String(s?.unacked_results ?? 0)]);
    lines.push(['pinned keys', config.signing_keys.map((k) => k.key_id).join(', ')]);
    lines.push(['versions', `agent ${s?.agent_version ?? AGENT_VERSION}, protocol ${PROTOCOL_VERSION}, node ${s?.node_version ?? process.version}`]);
    process.stdout.write(lines.map(([k, v]) => `${`${k}:`.padEnd(17)}${v}\n`).join(''));
  }
  return running && s?.state === 'connected' ? 0 : EXIT_NOT_CONNECTED;
}

async function main(argv: string[]): Promise<number | undefined> {
  if (argv[0] === 'harden') return hardenCli(argv.slice(1)); // its own options (executors/harden/cli.ts)
  const { values, positionals } = parse(argv);
  const [command, ...extra] = positionals;
  if (values.help || command === undefined || command === 'help') {
    process.stdout.write(USAGE);
    return command === undefined && !values.help ? EXIT_USAGE : 0;
  }
  if (extra.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(extra[0])}`);
  const configFile = values.config ?? DEFAULT_CONFIG_FILE;
  const stateDirFlag = values['state-dir'];
  const logLevel = values['log-level'];
  if (logLevel !== undefined && !isLevel(logLevel)) throw new UsageError(`--log-level must be debug, info, warn or error`);

  switch (command) {
    case 'version':
      process.stdout.write(`vmkit-agent ${AGENT_VERSION} (protocol ${PROTOCOL_VERSION}, node ${process.version})\n`);
      return 0;
    case 'print-unit':
      process.stdout.write(await systemdUnit());
      return 0;
    case 'enroll': {
      const envUrl = process.env.VMKIT_CONTROL_PLANE_URL;
      const urls = values.url ?? (envUrl ? [envUrl] : []);
      if (urls.length === 0) throw new UsageError('enroll needs --url URL (or VMKIT_CONTROL_PLANE_URL in the environment)');
      // VMKIT_ENROLLMENT_TOKEN keeps the token out of argv (visible in ps to every user).
      const token = values.token ?? process.env.VMKIT_ENROLLMENT_TOKEN;
      if (!token) throw new UsageError('enroll needs --token TOKEN (or VMKIT_ENROLLMENT_TOKEN in the environment)');
      const config = await enroll({
        urls,
        ...(values['ca-file'] !== undefined ? { caFile: values['ca-file'] } : {}),
        token,
        cpKeys: values['cp-key'] ?? [],
        configFile,
        stateDir: stateDirFlag ?? DEFAULT_STATE_DIR,
        insecure: values.insecure === true,
        force: values.force === true,
        sshHostKeyDir: values['ssh-host-key-dir'],
        onSkippedHostKey: (file, reason) => process.stderr.write(`vmkit-agent: not reporting ${file}: ${reason}\n`),
      });
      process.stdout.write(
        `enrolled as ${config.agent_id} (instance ${config.instance_id}); pinned ${config.signing_keys.map((k) => k.key_id).join(', ')}; config ${configFile}\n`,
      );
      return 0;
    }
    case 'run': {
      // --log-level wins; without it the config file's log_level applies (the daemon's default).
      let stop = (_why: string, _code?: number): void => undefined;
      const daemon = await startDaemon({
        configFile,
        stateDir: stateDirFlag,
        insecure: values.insecure === true,
        testStopAtHardenSteps: values['test-stop-at-harden-steps'] === true,
        ...(logLevel !== undefined && isLevel(logLevel) ? { log: createLogger(logLevel) } : {}),
        // systemd (Restart=always) or the install script's loop starts `current` again.
        onRestartRequested: (why) => stop(why, EXIT_RESTART),
      });
      const log = daemon.log;
      let stopping = false;
      stop = (why: string, code = 0) => {
        if (stopping) return;
        stopping = true;
        log.info(code === EXIT_RESTART ? 'restarting' : 'stopping', { reason: why });
        daemon.stop().then(
          () => process.exit(code),
          (err: unknown) => fail(`stop failed: ${(err as Error).message}`, 1),
        );
      };
      process.on('SIGTERM', () => stop('SIGTERM'));
      process.on('SIGINT', () => stop('SIGINT'));
      return undefined; // keep running
    }
    case 'status':
      return status(configFile, stateDirFlag, values.json === true);
    default:
      throw new UsageError(`unknown command ${JSON.stringify(command)} (enroll, run, status, version, print-unit)`);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code !== undefined) process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof UsageError) fail(`${err.message} (see vmkit-agent --help)`, EXIT_USAGE);
    if (err instanceof ConfigError) fail(err.message, EXIT_CONFIG);
    if (err instanceof EnrollError || err instanceof DaemonLockError) fail(err.message, 1);
    if (err instanceof RestartRequired) fail(`${err.message}; exiting so the previous version starts`, EXIT_RESTART);
    fail(`unexpected failure: ${(err as Error).stack ?? String(err)}`, 1);
  },
);
