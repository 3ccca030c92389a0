import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { writeFileAtomic } from './durable.ts';
import type { Logger } from './log.ts';

export const statusSchema = z.object({
  pid: z.number(),
  state: z.enum(['starting', 'connecting', 'handshaking', 'connected', 'waiting', 'stopped']),
  state_since: z.number(),
  agent_id: z.string(),
  instance_id: z.string(),
  connect_url: z.string(),
  agent_version: z.string(),
  protocol_version: z.number(),
  node_version: z.string(),
  started_at: z.number(),
  updated_at: z.number(),
  insecure: z.boolean(),
  heartbeat_interval_ms: z.number().optional(),
  last_connected_at: z.number().optional(),
  last_error: z.string().optional(),
  next_retry_at: z.number().optional(),
  last_command: z
    .object({ id: z.string(), type: z.string(), status: z.string(), error: z.string().optional(), finished_at: z.number() })
    .optional(),
  pinned_keys: z.array(z.string()),
  unacked_results: z.number(),
});
export type AgentStatus = z.infer<typeof statusSchema>;

/**
 * The daemon's view of itself in <state>/status.json, read by `vmkit-agent status`.
 * Writes are coalesced: at most one in flight, the newest state wins.
 */
export class StatusFile {
  readonly #file: string;
  readonly #log: Logger;
  #status: AgentStatus;
  #writing = false;
  #dirty = false;
  #idle: Promise<void> = Promise.resolve();

  constructor(file: string, initial: AgentStatus, log: Logger) {
    this.#file = file;
    this.#status = initial;
    this.#log = log;
  }

  get current(): AgentStatus {
    return this.#status;
  }

  update(patch: Partial<AgentStatus>): void {
    const now = Date.now();
    const next = { ...this.#status, ...patch, updated_at: now };
    if (patch.state !== undefined && patch.state !== this.#status.state) next.state_since = now;
    if (patch.state !== undefined && patch.state !== 'waiting') delete next.next_retry_at;
    this.#status = next;
    this.#flush();
  }

  /** Resolves when everything updated so far is on disk. */
  flushed(): Promise<void> {
    return this.#idle;
  }

  #flush(): void {
    this.#dirty = true;
    if (this.#writing) return;
    this.#writing = true;
    this.#idle = (async () => {
      while (this.#dirty) {
        this.#dirty = false;
        try {
          await writeFileAtomic(this.#file, `${JSON.stringify(this.#status, null, 2)}\n`);
        } catch (err) {
          this.#log.warn('status file not written', { file: this.#file, error: (err as Error).message });
        }
      }
      this.#writing = false;
    })();
  }
}

export async function readStatus(file: string): Promise<AgentStatus | undefined> {
  try {
    const parsed = statusSchema.safeParse(JSON.parse(await readFile(file, 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    // EPERM: it exists but belongs to someone else.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
