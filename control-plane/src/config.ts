import { resolve } from 'node:path';
import { parseArgs } from 'node:util';

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

export interface Config {
  host: string;
  /** 0 picks a free port (tests). */
  port: number;
  /** Absolute path; holds vmkit.sqlite, signing-key.pem and admin.key. */
  dataDir: string;
  /** The URL clients use to reach this server; undefined = http://<host>:<port> once listening. */
  publicUrl: string | undefined;
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
}

export const DEFAULT_CONFIG: Omit<Config, 'dataDir'> & { dataDir: string } = {
  host: '127.0.0.1',
  port: 8080,
  dataDir: './data',
  publicUrl: undefined,
  rateLimit: { max: 600, anonymousMax: 60, windowMs: 60_000 },
  logLevel: 'info',
  bodyLimit: 1024 * 1024,
  mcpMaxWaitMs: 45_000,
  mcpSessions: { max: 1000, anonymousMax: 100, perKeyMax: 32 },
  trustProxy: false,
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

/** Merges overrides onto the defaults (used by tests and by loadConfig). */
export function makeConfig(
  overrides: Partial<Omit<Config, 'rateLimit' | 'mcpSessions'>> & {
    rateLimit?: Partial<RateLimitConfig>;
    mcpSessions?: Partial<McpSessionConfig>;
  } = {},
): Config {
  const { rateLimit, mcpSessions, ...rest } = overrides;
  const merged = {
    ...DEFAULT_CONFIG,
    ...rest,
    rateLimit: { ...DEFAULT_CONFIG.rateLimit, ...rateLimit },
    mcpSessions: { ...DEFAULT_CONFIG.mcpSessions, ...mcpSessions },
  };
  if (merged.publicUrl !== undefined) merged.publicUrl = merged.publicUrl.replace(/\/+$/, '');
  return { ...merged, dataDir: resolve(merged.dataDir) };
}

export const SERVE_OPTIONS = {
  host: { type: 'string' },
  port: { type: 'string' },
  'data-dir': { type: 'string' },
  'public-url': { type: 'string' },
  'rate-limit-max': { type: 'string' },
  'rate-limit-anonymous-max': { type: 'string' },
  'rate-limit-window-ms': { type: 'string' },
  'log-level': { type: 'string' },
  'mcp-max-wait-ms': { type: 'string' },
  'trust-proxy': { type: 'string' },
} as const;

/**
 * Flags win over environment variables, which win over the defaults:
 * --host/VMKIT_HOST, --port/VMKIT_PORT, --data-dir/VMKIT_DATA_DIR,
 * --public-url/VMKIT_PUBLIC_URL, --rate-limit-max/VMKIT_RATE_LIMIT_MAX,
 * --rate-limit-anonymous-max/VMKIT_RATE_LIMIT_ANONYMOUS_MAX,
 * --rate-limit-window-ms/VMKIT_RATE_LIMIT_WINDOW_MS, --log-level/VMKIT_LOG_LEVEL,
 * --mcp-max-wait-ms/VMKIT_MCP_MAX_WAIT_MS,
 * --trust-proxy/VMKIT_TRUST_PROXY (false | true | comma-separated addresses).
 */
export function loadConfig(argv: string[] = [], env: NodeJS.ProcessEnv = process.env): Config {
  let values: Partial<Record<keyof typeof SERVE_OPTIONS, string>>;
  try {
    ({ values } = parseArgs({ args: argv, options: SERVE_OPTIONS, strict: true, allowPositionals: false }));
  } catch (err) {
    throw new ConfigError((err as Error).message);
  }
  const pick = (flag: keyof typeof SERVE_OPTIONS, envName: string): string | undefined => {
    const v = values[flag] ?? env[envName];
    return v === undefined || v === '' ? undefined : v;
  };
  const rl: Partial<RateLimitConfig> = {};
  const overrides: Parameters<typeof makeConfig>[0] = { rateLimit: rl };
  const host = pick('host', 'VMKIT_HOST');
  if (host !== undefined) overrides.host = host;
  const port = pick('port', 'VMKIT_PORT');
  if (port !== undefined) overrides.port = int('port', port, 0, 65535);
  // `npm start` runs in control-plane/; INIT_CWD is where the user typed it.
  const base = env.INIT_CWD || process.cwd();
  overrides.dataDir = resolve(base, pick('data-dir', 'VMKIT_DATA_DIR') ?? DEFAULT_CONFIG.dataDir);
  const publicUrl = pick('public-url', 'VMKIT_PUBLIC_URL');
  if (publicUrl !== undefined) {
    let u: URL;
    try {
      u = new URL(publicUrl);
    } catch {
      throw new ConfigError(`public URL must be an absolute http(s) URL, got "${publicUrl}"`);
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') {
      throw new ConfigError(`public URL must be an absolute http(s) URL, got "${publicUrl}"`);
    }
    overrides.publicUrl = publicUrl;
  }
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
  return makeConfig(overrides);
}
