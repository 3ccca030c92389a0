import { X509Certificate } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { NODE_ID_PATTERN } from './node-id.ts';

export type LogLevel = 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
const LOG_LEVELS: readonly LogLevel[] = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export interface RateLimitConfig {
  /** Requests per window for one API key. */
  max: number;
  /** Requests per window for one client address without a valid key. */
  anonymousMax: number;
  windowMs: number;
}

/** Bounds on MCP sessions (see McpHttpHandler). */
export interface McpSessionConfig {
  /** Sessions of valid keys, all keys together. */
  max: number;
  /** Sessions opened without a valid key; they only ever evict each other. */
  anonymousMax: number;
  /** Sessions one key may hold; its oldest goes first. */
  perKeyMax: number;
}

/** The ops shell (both doors): limits, recording, revocation checks. */
export interface ShellConfig {
  /** A session with no byte either way for this long is closed (AWS SSM's default: 20 min). */
  idleTimeoutMs: number;
  /** Longest a session may last, whatever happens in it. */
  maxSessionMs: number;
  /** Also record what operators type (`"i"` events); off by default: passwords typed at a prompt would land in the file. */
  recordInput: boolean;
  /** Fail closed: refuse or end a session whose recording cannot be written (instead of running it unrecorded). */
  requireRecording: boolean;
  /** How often live sessions re-check their API key (revoked, expired) and SSH key: the bound on closing them. */
  keyCheckMs: number;
}

export interface SshGatewayConfig {
  /** null = off; 0 = a free port (tests). */
  port: number | null;
  /** Listen address; defaults to the HTTP host. */
  host: string | undefined;
  /**
   * false for the default port: when it is taken (a second control plane on the
   * machine), the server starts without the gateway and says so instead of failing.
   */
  required: boolean;
}

export interface Config {
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
  /** Absolute path; holds vmkit.sqlite (unless databaseUrl is set), signing-key.pem and admin.key. */
  dataDir: string;
  /** postgres://... selects PostgreSQL instead of the SQLite file in dataDir. */
  databaseUrl: string | undefined;
  /** The URL clients use to reach this server; undefined = http://<host>:<port> once listening. */
  publicUrl: string | undefined;
  /**
   * Several processes on one database: the URL the others reach this one at (they relay
   * MCP sessions to it); undefined = http://<host>:<port> once listening. Needed when the
   * processes run on several machines and --host is a wildcard (0.0.0.0, ::).
   */
  internalUrl: string | undefined;
  rateLimit: RateLimitConfig;
  logLevel: LogLevel;
  /** Largest accepted request body in bytes. */
  bodyLimit: number;
  /**
   * Behind a reverse proxy, whose X-Forwarded-For to believe (rate limits and audit
   * addresses use the client address): false, true, or comma-separated addresses/CIDRs.
   */
  trustProxy: boolean | string;
  /** Longest an MCP tool blocks before answering with an id to poll (clients give up at 60 s). */
  mcpMaxWaitMs: number;
  mcpSessions: McpSessionConfig;
  shell: ShellConfig;
  sshGateway: SshGatewayConfig;
  /** This process's name in metrics (and, with several processes, in the node registry); undefined = `<dataDir>/node-id`. */
  nodeId: string | undefined;
  /** A second, unauthenticated listener serving only /metrics (e.g. 127.0.0.1:9464); null = only the main port's /metrics, with an admin key. */
  metricsListen: MetricsListenConfig | null;
  /**
   * The secret-box key (provider credentials; on PostgreSQL also the signing keys) from
   * this file instead of `<dataDir>/secret-box.key`: every process of a deployment on one
   * database must be given the same key. The file must exist (never created here).
   */
  secretKeyFile: string | undefined;
  leases: LeaseConfig;
  /**
   * The control-plane base URLs the agents of VMs this control plane provisions dial
   * (cloud-init's install step: the first is the install URL, the others VMKIT_CP_URLS);
   * undefined = the public URL alone. Several for a fleet whose processes each have an address.
   */
  agentUrls: string[] | undefined;
  /** A private CA those agents trust instead of the system's roots (the control plane's TLS certificate is from it). */
  agentCa: AgentCa | undefined;
}

/** `--agent-ca-file`: read once at start; the PEM travels in cloud-init user data. */
export interface AgentCa {
  file: string;
  pem: string;
}

/** The agent's own limits: at most 8 control-plane URLs, a ca_file of at most 1 MiB. */
export const MAX_AGENT_URLS = 8;
export const MAX_AGENT_CA_BYTES = 1024 * 1024;

/**
 * Deploys and agent rollouts are each driven by one process holding a lease on them.
 * The owner renews its leases every `checkMs` (one UPDATE for all of them) and every
 * process claims, as often, work whose lease ran out (its owner died or stalled).
 */
export interface LeaseConfig {
  /** How long a lease holds without renewal (how long a dead process's work waits). */
  durationMs: number;
  /** How often leases are renewed and expired ones claimed; less than durationMs / 2. */
  checkMs: number;
}

export interface MetricsListenConfig {
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
}

/** What `npm start` listens on for `ssh -p 2222 <instance>@<host>` unless told otherwise. */
export const DEFAULT_SSH_GATEWAY_PORT = 2222;

export const DEFAULT_CONFIG: Omit<Config, 'dataDir'> & { dataDir: string } = {
  host: '127.0.0.1',
  port: 8080,
  dataDir: './data',
  databaseUrl: undefined,
  publicUrl: undefined,
  internalUrl: undefined,
  rateLimit: { max: 600, anonymousMax: 60, windowMs: 60_000 },
  logLevel: 'info',
  bodyLimit: 1024 * 1024,
  mcpMaxWaitMs: 45_000,
  mcpSessions: { max: 1000, anonymousMax: 100, perKeyMax: 32 },
  trustProxy: false,
  shell: { idleTimeoutMs: 20 * 60_000, maxSessionMs: 12 * 3_600_000, recordInput: false, requireRecording: false, keyCheckMs: 5_000 },
  // Off unless asked for (tests run many control planes at once); loadConfig turns it on at 2222.
  sshGateway: { port: null, host: undefined, required: true },
  nodeId: undefined,
  secretKeyFile: undefined,
  metricsListen: null,
  leases: { durationMs: 30_000, checkMs: 10_000 },
  agentUrls: undefined,
  agentCa: undefined,
};

export class ConfigError extends Error {
  override name = 'ConfigError';
}

function int(name: string, raw: string, min: number, max: number): number {
  if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be a whole number, got "${raw}"`);
  const n = Number(raw);
  if (n < min || n > max) throw new ConfigError(`${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

function bool(name: string, raw: string): boolean {
  if (raw === 'true' || raw === 'false') return raw === 'true';
  throw new ConfigError(`${name} must be true or false, got "${raw}"`);
}

/** Merges overrides onto the defaults (used by tests and by loadConfig). */
export function makeConfig(
  overrides: Partial<Omit<Config, 'rateLimit' | 'mcpSessions' | 'shell' | 'sshGateway' | 'leases'>> & {
    leases?: Partial<LeaseConfig>;
    rateLimit?: Partial<RateLimitConfig>;
    mcpSessions?: Partial<McpSessionConfig>;
    shell?: Partial<ShellConfig>;
    sshGateway?: Partial<SshGatewayConfig>;
  } = {},
): Config {
  const { rateLimit, mcpSessions, shell, sshGateway, leases, ...rest } = overrides;
  const merged = {
    ...DEFAULT_CONFIG,
    ...rest,
    rateLimit: { ...DEFAULT_CONFIG.rateLimit, ...rateLimit },
    mcpSessions: { ...DEFAULT_CONFIG.mcpSessions, ...mcpSessions },
    shell: { ...DEFAULT_CONFIG.shell, ...shell },
    sshGateway: { ...DEFAULT_CONFIG.sshGateway, ...sshGateway },
    leases: {
      durationMs: leases?.durationMs ?? DEFAULT_CONFIG.leases.durationMs,
      // A shorter lease alone brings the check down with it (a third of the lease at most).
      checkMs: leases?.checkMs ?? Math.min(DEFAULT_CONFIG.leases.checkMs, Math.floor((leases?.durationMs ?? DEFAULT_CONFIG.leases.durationMs) / 3)),
    },
  };
  if (merged.leases.checkMs * 2 > merged.leases.durationMs) {
    throw new ConfigError(
      `lease check interval (${merged.leases.checkMs} ms) must be at most half the lease duration (${merged.leases.durationMs} ms), so a live process renews in time`,
    );
  }
  if (merged.publicUrl !== undefined) merged.publicUrl = merged.publicUrl.replace(/\/+$/, '');
  if (merged.internalUrl !== undefined) merged.internalUrl = merged.internalUrl.replace(/\/+$/, '');
  return { ...merged, dataDir: resolve(merged.dataDir) };
}

export const SERVE_OPTIONS = {
  host: { type: 'string' },
  port: { type: 'string' },
  'data-dir': { type: 'string' },
  'database-url': { type: 'string' },
  'public-url': { type: 'string' },
  'internal-url': { type: 'string' },
  'rate-limit-max': { type: 'string' },
  'rate-limit-anonymous-max': { type: 'string' },
  'rate-limit-window-ms': { type: 'string' },
  'log-level': { type: 'string' },
  'mcp-max-wait-ms': { type: 'string' },
  'trust-proxy': { type: 'string' },
  'ssh-gateway-port': { type: 'string' },
  'ssh-gateway-host': { type: 'string' },
  'shell-idle-timeout-s': { type: 'string' },
  'shell-max-session-s': { type: 'string' },
  'shell-record-input': { type: 'string' },
  'shell-require-recording': { type: 'string' },
  'node-id': { type: 'string' },
  'metrics-listen': { type: 'string' },
  'secret-key-file': { type: 'string' },
  'lease-ms': { type: 'string' },
  'lease-check-ms': { type: 'string' },
  'agent-url': { type: 'string', multiple: true },
  'agent-ca-file': { type: 'string' },
} as const;

/** `host:port` or `[v6]:port`: where the unauthenticated /metrics listener binds. */
export function parseListenAddress(raw: string): MetricsListenConfig {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]\s]+)):(\d{1,5})$/.exec(raw);
  const host = m?.[1] ?? m?.[2];
  if (!m || host === undefined) throw new ConfigError(`metrics listen address must be host:port (e.g. 127.0.0.1:9464), got "${raw}"`);
  return { host, port: int('metrics listen port', m[3] ?? '', 0, 65535) };
}

/**
 * Flags win over environment variables, which win over the defaults:
 * --host/VMKIT_HOST, --port/VMKIT_PORT, --data-dir/VMKIT_DATA_DIR,
 * --database-url/VMKIT_DATABASE_URL (postgres://...; unset = SQLite in the data dir),
 * --public-url/VMKIT_PUBLIC_URL, --internal-url/VMKIT_INTERNAL_URL (where other processes on the
 * same database reach this one; default http://<host>:<port>), --rate-limit-max/VMKIT_RATE_LIMIT_MAX,
 * --rate-limit-anonymous-max/VMKIT_RATE_LIMIT_ANONYMOUS_MAX,
 * --rate-limit-window-ms/VMKIT_RATE_LIMIT_WINDOW_MS, --log-level/VMKIT_LOG_LEVEL,
 * --mcp-max-wait-ms/VMKIT_MCP_MAX_WAIT_MS,
 * --trust-proxy/VMKIT_TRUST_PROXY (false | true | comma-separated addresses),
 * --ssh-gateway-port/VMKIT_SSH_GATEWAY_PORT (default 2222; 0 = off),
 * --ssh-gateway-host/VMKIT_SSH_GATEWAY_HOST (default: --host),
 * --shell-idle-timeout-s/VMKIT_SHELL_IDLE_TIMEOUT_S, --shell-max-session-s/VMKIT_SHELL_MAX_SESSION_S,
 * --shell-record-input/VMKIT_SHELL_RECORD_INPUT (true | false),
 * --shell-require-recording/VMKIT_SHELL_REQUIRE_RECORDING (true | false: fail closed),
 * --node-id/VMKIT_NODE_ID (default: kept in <data-dir>/node-id),
 * --metrics-listen/VMKIT_METRICS_LISTEN (host:port of an unauthenticated /metrics listener; default none),
 * --secret-key-file/VMKIT_SECRET_KEY_FILE (the secret-box key every process on one database shares; default <data-dir>/secret-box.key),
 * --lease-ms/VMKIT_LEASE_MS (how long a deploy's or rollout's lease holds unrenewed; default 30000),
 * --lease-check-ms/VMKIT_LEASE_CHECK_MS (how often leases are renewed and expired ones claimed; default 10000),
 * --agent-url (repeatable)/VMKIT_AGENT_URLS (space-separated: the https:// bases the agents of provisioned VMs dial; default the public URL),
 * --agent-ca-file/VMKIT_AGENT_CA_FILE (a PEM CA those agents trust instead of the system's roots; default none).
 */
export function loadConfig(argv: string[] = [], env: NodeJS.ProcessEnv = process.env): Config {
  let values: ReturnType<typeof parseArgs<{ args: string[]; options: typeof SERVE_OPTIONS; strict: true; allowPositionals: false }>>['values'];
  try {
    ({ values } = parseArgs({ args: argv, options: SERVE_OPTIONS, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const pick = (flag: Exclude<keyof typeof SERVE_OPTIONS, 'agent-url'>, envName: string): string | undefined => {
    const v = values[flag] ?? env[envName];
    return v === undefined || v === '' ? undefined : v;
  };
  const rl: Partial<RateLimitConfig> = {};
  const shell: Partial<ShellConfig> = {};
  const gwPort = pick('ssh-gateway-port', 'VMKIT_SSH_GATEWAY_PORT');
  const gwHost = pick('ssh-gateway-host', 'VMKIT_SSH_GATEWAY_HOST');
  const overrides: Parameters<typeof makeConfig>[0] = {
    rateLimit: rl,
    shell,
    sshGateway: {
      port: gwPort === undefined ? DEFAULT_SSH_GATEWAY_PORT : int('SSH gateway port', gwPort, 0, 65535) || null,
      host: gwHost,
      required: gwPort !== undefined,
    },
  };
  const idle = pick('shell-idle-timeout-s', 'VMKIT_SHELL_IDLE_TIMEOUT_S');
  if (idle !== undefined) shell.idleTimeoutMs = int('shell idle timeout', idle, 1, 7 * 86_400) * 1000;
  const maxLen = pick('shell-max-session-s', 'VMKIT_SHELL_MAX_SESSION_S');
  if (maxLen !== undefined) shell.maxSessionMs = int('shell max session length', maxLen, 1, 30 * 86_400) * 1000;
  const recIn = pick('shell-record-input', 'VMKIT_SHELL_RECORD_INPUT');
  if (recIn !== undefined) shell.recordInput = bool('shell record input', recIn);
  const recReq = pick('shell-require-recording', 'VMKIT_SHELL_REQUIRE_RECORDING');
  if (recReq !== undefined) shell.requireRecording = bool('shell require recording', recReq);
  const host = pick('host', 'VMKIT_HOST');
  if (host !== undefined) overrides.host = host;
  const port = pick('port', 'VMKIT_PORT');
  if (port !== undefined) overrides.port = int('port', port, 0, 65535);
  // `npm start` runs in control-plane/; INIT_CWD is where the user typed it.
  const base = env.INIT_CWD || process.cwd();
  overrides.dataDir = resolve(base, pick('data-dir', 'VMKIT_DATA_DIR') ?? DEFAULT_CONFIG.dataDir);
  const databaseUrl = pick('database-url', 'VMKIT_DATABASE_URL');
  if (databaseUrl !== undefined) {
    if (!/^postgres(ql)?:\/\//i.test(databaseUrl)) {
      // The value may hold a password: name only its scheme.
      throw new ConfigError(`database URL must start with postgres:// or postgresql:// (got "${databaseUrl.split(':')[0] ?? ''}:...")`);
    }
    overrides.databaseUrl = databaseUrl;
  }
  const httpUrl = (what: string, raw: string): string => {
    let u: URL | undefined;
    try {
      u = new URL(raw);
    } catch {
      u = undefined;
    }
    if (u?.protocol !== 'http:' && u?.protocol !== 'https:') throw new ConfigError(`${what} must be an absolute http(s) URL, got "${raw}"`);
    return raw;
  };
  const publicUrl = pick('public-url', 'VMKIT_PUBLIC_URL');
  if (publicUrl !== undefined) overrides.publicUrl = httpUrl('public URL', publicUrl);
  const internalUrl = pick('internal-url', 'VMKIT_INTERNAL_URL');
  if (internalUrl !== undefined) overrides.internalUrl = httpUrl('internal URL', internalUrl);
  const max = pick('rate-limit-max', 'VMKIT_RATE_LIMIT_MAX');
  if (max !== undefined) rl.max = int('rate limit max', max, 1, 1_000_000_000);
  const anon = pick('rate-limit-anonymous-max', 'VMKIT_RATE_LIMIT_ANONYMOUS_MAX');
  if (anon !== undefined) rl.anonymousMax = int('anonymous rate limit max', anon, 1, 1_000_000_000);
  const win = pick('rate-limit-window-ms', 'VMKIT_RATE_LIMIT_WINDOW_MS');
  if (win !== undefined) rl.windowMs = int('rate limit window', win, 100, 86_400_000);
  const mcpWait = pick('mcp-max-wait-ms', 'VMKIT_MCP_MAX_WAIT_MS');
  if (mcpWait !== undefined) overrides.mcpMaxWaitMs = int('MCP max wait', mcpWait, 0, 600_000);
  const level = pick('log-level', 'VMKIT_LOG_LEVEL');
  if (level !== undefined) {
    if (!LOG_LEVELS.includes(level as LogLevel)) {
      throw new ConfigError(`log level must be one of ${LOG_LEVELS.join(', ')}, got "${level}"`);
    }
    overrides.logLevel = level as LogLevel;
  }
  const proxy = pick('trust-proxy', 'VMKIT_TRUST_PROXY');
  if (proxy !== undefined) {
    if (proxy === 'true' || proxy === 'false') overrides.trustProxy = proxy === 'true';
    else if (/^[0-9A-Fa-f.:/]+(,[0-9A-Fa-f.:/]+)*$/.test(proxy)) overrides.trustProxy = proxy;
    else throw new ConfigError(`trust proxy must be true, false, or addresses, got "${proxy}"`);
  }
  const nodeId = pick('node-id', 'VMKIT_NODE_ID');
  if (nodeId !== undefined) {
    if (!NODE_ID_PATTERN.test(nodeId)) throw new ConfigError(`node id must be letters, digits, . _ - (at most 63, starting with a letter or digit), got "${nodeId}"`);
    overrides.nodeId = nodeId;
  }
  const metricsListen = pick('metrics-listen', 'VMKIT_METRICS_LISTEN');
  if (metricsListen !== undefined) overrides.metricsListen = parseListenAddress(metricsListen);
  const secretKeyFile = pick('secret-key-file', 'VMKIT_SECRET_KEY_FILE');
  if (secretKeyFile !== undefined) overrides.secretKeyFile = resolve(base, secretKeyFile);
  const leaseMs = pick('lease-ms', 'VMKIT_LEASE_MS');
  const leaseCheckMs = pick('lease-check-ms', 'VMKIT_LEASE_CHECK_MS');
  if (leaseMs !== undefined || leaseCheckMs !== undefined) {
    overrides.leases = {
      ...(leaseMs !== undefined ? { durationMs: int('lease duration', leaseMs, 200, 3_600_000) } : {}),
      ...(leaseCheckMs !== undefined ? { checkMs: int('lease check interval', leaseCheckMs, 50, 1_800_000) } : {}),
    };
  }
  // Repeated flags, or one space-separated variable (as install-agent.sh's VMKIT_CP_URLS).
  const agentUrls = values['agent-url'] ?? env.VMKIT_AGENT_URLS?.split(/\s+/).filter((u) => u !== '');
  if (agentUrls !== undefined && agentUrls.length > 0) overrides.agentUrls = parseAgentUrls(agentUrls);
  const agentCaFile = pick('agent-ca-file', 'VMKIT_AGENT_CA_FILE');
  if (agentCaFile !== undefined) overrides.agentCa = readAgentCa(resolve(base, agentCaFile));
  return makeConfig(overrides);
}

/**
 * The agent's rule for control-plane URLs, checked here so a provisioned VM is never
 * handed one its agent refuses: the https:// base (plain http:// only to loopback),
 * nothing cloud-init's shell line or install-agent.sh could not carry, at most 8.
 */
export function parseAgentUrls(raw: readonly string[]): string[] {
  const urls: string[] = [];
  for (const r of raw) {
    const what = `agent URL "${r}"`;
    let u: URL;
    try {
      u = new URL(r);
    } catch {
      throw new ConfigError(`${what} is not an absolute URL; give the control plane's https:// base (e.g. https://cp-a.example.com)`);
    }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') {
      throw new ConfigError(`${what} must be the control plane's https:// base (the agent derives wss://.../agent/v1/connect from it), not ${u.protocol}//`);
    }
    if (u.protocol === 'http:' && !isLoopbackName(u.hostname)) {
      throw new ConfigError(`${what}: plain http:// is allowed only to loopback (127.0.0.1, [::1], localhost); the agent refuses it elsewhere, use https://`);
    }
    if (!/^https?:\/\/[A-Za-z0-9.:[\]/_~%-]+$/.test(r) || u.username !== '' || u.password !== '') {
      throw new ConfigError(`${what} has a character no control-plane URL needs (letters, digits and . : [ ] / _ ~ % - only; no query, fragment or credentials)`);
    }
    const url = r.replace(/\/+$/, '');
    if (!urls.includes(url)) urls.push(url);
  }
  if (urls.length > MAX_AGENT_URLS) throw new ConfigError(`${urls.length} agent URLs given; an agent dials at most ${MAX_AGENT_URLS}`);
  return urls;
}

function isLoopbackName(hostname: string): boolean {
  return hostname === 'localhost' || hostname === '[::1]' || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/** Reads and checks `--agent-ca-file` as the agent would its ca_file: a readable PEM certificate of at most 1 MiB. */
export function readAgentCa(file: string): AgentCa {
  let size: number;
  let pem: string;
  try {
    size = statSync(file).size;
    if (size > MAX_AGENT_CA_BYTES) throw new ConfigError(`agent CA file ${file} is ${size} bytes; at most ${MAX_AGENT_CA_BYTES} (1 MiB, the agent's limit for ca_file)`);
    pem = readFileSync(file, 'utf8');
  } catch (err) {
    if (err instanceof ConfigError) throw err;
    throw new ConfigError(`agent CA file ${file} cannot be read: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  // Its content goes into every provisioned VM's user data, which the VM's processes can read.
  if (/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pem)) {
    throw new ConfigError(`agent CA file ${file} holds a private key; give a file with the CA certificate(s) only (it is copied into every VM it provisions)`);
  }
  const blocks = pem.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g) ?? [];
  if (blocks.length === 0) throw new ConfigError(`agent CA file ${file} holds no PEM certificate (-----BEGIN CERTIFICATE----- ... -----END CERTIFICATE-----)`);
  for (const [i, block] of blocks.entries()) {
    try {
      new X509Certificate(block);
    } catch {
      throw new ConfigError(`agent CA file ${file}: certificate ${i + 1} of ${blocks.length} is not a valid X.509 certificate`);
    }
  }
  return { file, pem };
}
