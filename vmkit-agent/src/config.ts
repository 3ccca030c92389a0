import { readFile, stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import { mkdir } from 'node:fs/promises';
import { idSchema, signingKeySchema } from '@vmkit/protocol';
import type { SigningKey } from '@vmkit/protocol';
import { z } from 'zod';
import { writeFileAtomic } from './durable.ts';
import { shellConfigSchema } from './executors/shell/config.ts';

export const DEFAULT_CONFIG_FILE = '/etc/vmkit/agent.json';
export const DEFAULT_STATE_DIR = '/var/lib/vmkit-agent';

/** A configuration problem: printed as one line, the daemon exits with EX_CONFIG. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
}

export const EXIT_CONFIG = 78;

/** A control-plane key this agent pinned: the wire's signing key, kept as it came. */
export type PinnedKey = SigningKey;

export const agentConfigSchema = z.strictObject({
  version: z.literal(1),
  agent_id: idSchema('agent'),
  instance_id: idSchema('instance'),
  /** Base URL enrollment used (http(s)://...). */
  control_plane_url: z.string().max(2048),
  /** ws(s)://.../agent/v1/connect as the control plane announced it. */
  connect_url: z.string().max(2048),
  /**
   * Other processes of the same fleet (ws(s)://.../agent/v1/connect), dialled in turn
   * after connect_url when a connection fails or drops (enroll --url A --url B ...).
   * Unneeded behind one load-balanced URL.
   */
  connect_urls: z.array(z.string().max(2048)).max(7).optional(),
  /**
   * PEM file of the CA(s) this agent trusts for wss:// and https:// to its control
   * planes, instead of the system's roots (a private CA; enroll --ca-file).
   */
  ca_file: z.string().min(1).max(4096).optional(),
  /** Control-plane keys commands must be signed with; changed only by keys.rotate. */
  signing_keys: z.array(signingKeySchema).min(1).max(8),
  /** State directory chosen at enrollment; --state-dir overrides it. */
  state_dir: z.string().min(1).max(4096),
  /** Plain ws:// to a non-local address, accepted at enrollment with --insecure. */
  insecure: z.boolean().optional(),
  enrolled_at: z.string().max(64),
  /** Reconnect tuning; defaults suit production. */
  reconnect: z
    .strictObject({
      base_ms: z.number().int().min(10).max(60_000).optional(),
      cap_ms: z.number().int().min(10).max(3_600_000).optional(),
      /** A connection up this long resets the backoff. */
      stable_ms: z.number().int().min(0).max(3_600_000).optional(),
      /** Challenge + welcome must arrive within this. */
      handshake_timeout_ms: z.number().int().min(100).max(300_000).optional(),
    })
    .optional(),
  log_level: z.enum(['debug', 'info', 'warn', 'error']).optional(),
  /** Self-update: a new version not connected this long after the switch is rolled back (default 120 s). */
  update: z.strictObject({ confirm_within_ms: z.number().int().min(1_000).max(3_600_000).optional() }).optional(),
  /** The ops shell: on/off, limits, default user, root. */
  shell: shellConfigSchema.optional(),
});
export type AgentConfig = z.infer<typeof agentConfigSchema>;

export async function loadConfig(file: string): Promise<AgentConfig> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new ConfigError(`config file ${file} does not exist (run \`vmkit-agent enroll\` first, or pass --config)`);
    throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`);
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`config file ${file} is not valid JSON: ${(err as Error).message}`);
  }
  const parsed = agentConfigSchema.safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue && issue.path.length > 0 ? issue.path.join('.') : 'top level';
    throw new ConfigError(`config file ${file} is invalid at ${where}: ${issue?.message ?? 'unknown problem'}`);
  }
  return parsed.data;
}

export async function saveConfig(file: string, config: AgentConfig): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o755 });
  await writeFileAtomic(file, `${JSON.stringify(agentConfigSchema.parse(config), null, 2)}\n`, 0o600);
}

export async function fileExists(file: string): Promise<boolean> {
  try {
    await stat(file);
    return true;
  } catch {
    return false;
  }
}
