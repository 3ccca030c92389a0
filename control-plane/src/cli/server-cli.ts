import { parseArgs } from 'node:util';
import { ConfigError, SERVE_OPTIONS, loadConfig } from '../config.ts';
import { createWorkspaceWithAdminKey, newWorkspaceMessage } from '../auth/bootstrap.ts';
import { closeDatabase, openDatabase, redactDatabaseUrl } from '../db/index.ts';
import { startControlPlane } from '../server.ts';
import type { RunningControlPlane } from '../server.ts';
import { runningServerUrl } from '../server-url.ts';
import type { Io } from './output.ts';

export const SERVER_USAGE = `Usage:
  vmkit-control-plane serve [--host H] [--port P] [--data-dir D] [--database-url postgres://...] [--public-url U]
                            [--rate-limit-max N] [--rate-limit-anonymous-max N]
                            [--rate-limit-window-ms MS] [--log-level L] [--trust-proxy T]
                            [--ssh-gateway-port P (2222; 0 = off)] [--ssh-gateway-host H]
                            [--shell-idle-timeout-s S] [--shell-max-session-s S]
                            [--shell-record-input true|false] [--shell-require-recording true|false]
                            [--node-id ID] [--metrics-listen HOST:PORT] [--internal-url U]
                            [--agent-url URL ...] [--agent-ca-file PEM]
  vmkit-control-plane workspaces create NAME [--data-dir D] [--database-url postgres://...] [--public-url U]

SQLite (a file in the data dir) unless --database-url or VMKIT_DATABASE_URL names a
PostgreSQL database; the data dir still holds the signing key and recordings.

VMs this control plane provisions (local, hetzner) get an agent that dials --agent-url
(repeat it for each control plane of a fleet; https://, http:// only to loopback;
default: the public URL) and trusts --agent-ca-file (the PEM CA of the control plane's
TLS certificate, instead of the system's roots; read at start, at most 1 MiB).

Environment: VMKIT_HOST, VMKIT_PORT, VMKIT_DATA_DIR, VMKIT_DATABASE_URL, VMKIT_PUBLIC_URL,
VMKIT_RATE_LIMIT_MAX, VMKIT_RATE_LIMIT_ANONYMOUS_MAX, VMKIT_RATE_LIMIT_WINDOW_MS,
VMKIT_LOG_LEVEL, VMKIT_TRUST_PROXY, VMKIT_SSH_GATEWAY_PORT, VMKIT_SSH_GATEWAY_HOST,
VMKIT_SHELL_IDLE_TIMEOUT_S, VMKIT_SHELL_MAX_SESSION_S, VMKIT_SHELL_RECORD_INPUT,
VMKIT_SHELL_REQUIRE_RECORDING, VMKIT_NODE_ID, VMKIT_METRICS_LISTEN,
VMKIT_AGENT_URLS (space-separated), VMKIT_AGENT_CA_FILE. Flags win over the environment.
`;

/** Starts the server; resolves once it listens. The caller owns shutdown. */
export async function serve(argv: string[], io: Io): Promise<RunningControlPlane> {
  const config = loadConfig(argv, io.env);
  const running = await startControlPlane(config);
  if (running.bootstrap) io.stdout(newWorkspaceMessage(running.bootstrap, running.ctx.publicUrl));
  io.stdout(`Dashboard: ${running.ctx.publicUrl.replace(/\/+$/, '')}/ (sign in with an API key)\n`);
  const gw = running.ctx.sshGateway;
  if (gw) {
    // Printed so users can pin it: `ssh` shows the same fingerprint on first contact.
    io.stdout(
      `SSH gateway: ssh -p ${gw.port} <instance>@${gw.host.includes(':') ? `[${gw.host}]` : gw.host}\n` +
        `  host key ${gw.hostKey.fingerprint}\n  known_hosts line: [${gw.host}]:${gw.port} ${gw.hostKey.publicKey}\n`,
    );
  }
  // The runtime is named so operators can see which Node (and so which security fixes) serves them.
  running.ctx.logger.info(
    {
      url: running.url,
      public_url: running.ctx.publicUrl,
      data_dir: config.dataDir,
      database: config.databaseUrl === undefined ? 'sqlite' : redactDatabaseUrl(config.databaseUrl),
      node: process.version,
    },
    'control plane listening',
  );
  return running;
}

/** `workspaces create NAME`: runs against the data directory directly (the server may be running). */
export async function createWorkspaceCommand(argv: string[], io: Io): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, options: SERVE_OPTIONS, allowPositionals: true, strict: true });
  const name = positionals[0];
  if (positionals.length !== 1 || name === undefined || !/^[\w .-]{1,100}$/.test(name)) {
    io.stderr('workspaces create needs exactly one NAME (letters, digits, space, ._-; at most 100)\n');
    return 2;
  }
  const flags: string[] = [];
  for (const [k, v] of Object.entries(values)) for (const one of typeof v === 'string' ? [v] : Array.isArray(v) ? v : []) flags.push(`--${k}`, one);
  const config = loadConfig(flags, io.env);
  const db = await openDatabase(config);
  try {
    const created = await createWorkspaceWithAdminKey(db, name);
    const running = runningServerUrl(config.dataDir);
    const url = config.publicUrl ?? running ?? `http://${config.host}:${config.port}`;
    io.stdout(newWorkspaceMessage(created, url));
    if (config.publicUrl === undefined && running === null) {
      io.stdout(`No server is running on ${config.dataDir}, so the entry above assumes ${url}; pass --public-url to name the real one.\n`);
    }
    return 0;
  } finally {
    await closeDatabase(db);
  }
}

/**
 * The `vmkit-control-plane` entry: `serve` runs until SIGTERM/SIGINT (graceful: stops
 * accepting, finishes in-flight requests, closes the database); a second signal exits at once.
 */
export async function runServerCli(argv: string[], io: Io): Promise<number> {
  const [command, ...rest] = argv;
  try {
    if (command === 'serve') {
      const running = await serve(rest, io);
      await new Promise<void>((resolve) => {
        let stopping = false;
        const stop = (signal: NodeJS.Signals) => {
          if (stopping) process.exit(130);
          stopping = true;
          running.ctx.logger.info({ signal }, 'shutting down');
          running.close().then(resolve, (err: unknown) => {
            running.ctx.logger.error({ err }, 'shutdown failed');
            resolve();
          });
        };
        process.on('SIGTERM', stop);
        process.on('SIGINT', stop);
      });
      return 0;
    }
    if (command === 'workspaces' && rest[0] === 'create') return await createWorkspaceCommand(rest.slice(1), io);
    if (command === undefined || command === 'help' || command === '--help' || command === '-h') {
      io.stdout(SERVER_USAGE);
      return command === undefined ? 2 : 0;
    }
    io.stderr(`unknown command: ${argv.join(' ')}\n\n${SERVER_USAGE}`);
    return 2;
  } catch (err) {
    if (err instanceof ConfigError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      io.stderr(`${(err as Error).message}\n`);
      return 2;
    }
    throw err;
  }
}
