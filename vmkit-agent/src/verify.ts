import { readFile } from 'node:fs/promises';
import { CLOCK_SKEW_MS, ReplayCache, pinKeys, replayEntrySchema, verifyCommand } from '@vmkit/protocol';
import type { CommandEnvelope, PinnedKeys, VerifyResult } from '@vmkit/protocol';
import { z } from 'zod';
import { ConfigError } from './config.ts';
import type { PinnedKey } from './config.ts';
import { writeFileAtomic } from './durable.ts';

const replayFileSchema = z.strictObject({ version: z.literal(1), entries: z.array(replayEntrySchema).max(1_000_000) });

/**
 * Decides whether a command may run: the protocol's verifyCommand under the pinned
 * keys, this agent's id, the clock, and a replay cache that survives restarts
 * (fsync'd before the command runs, pruned of entries that can no longer pass the
 * expiry check anyway).
 */
export class CommandVerifier {
  readonly #file: string;
  readonly #agentId: string;
  readonly #cache: ReplayCache;
  #pinned: PinnedKeys;
  #writes: Promise<void> = Promise.resolve();

  private constructor(file: string, agentId: string, keys: PinnedKey[], cache: ReplayCache) {
    this.#file = file;
    this.#agentId = agentId;
    this.#pinned = pinKeys(keys);
    this.#cache = cache;
  }

  static async open(file: string, agentId: string, keys: PinnedKey[], now = Date.now()): Promise<CommandVerifier> {
    let cache = new ReplayCache();
    let text: string | undefined;
    try {
      text = await readFile(file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new ConfigError(`cannot read replay cache ${file}: ${(err as Error).message}`);
    }
    if (text !== undefined) {
      let parsed;
      try {
        parsed = replayFileSchema.safeParse(JSON.parse(text));
      } catch {
        parsed = undefined;
      }
      // Forgetting accepted commands would reopen them to replay: refuse to start instead.
      if (!parsed?.success) throw new ConfigError(`replay cache ${file} is corrupt; move it aside only if no command issued in the last 16 minutes could be replayed`);
      cache = new ReplayCache(parsed.data.entries);
      cache.prune(now);
    }
    return new CommandVerifier(file, agentId, keys, cache);
  }

  setPinnedKeys(keys: PinnedKey[]): void {
    this.#pinned = pinKeys(keys);
  }

  /** `batch`: the command frame's field, when its signature signs a batch (command-batch.ts). */
  verify(envelope: unknown, signature: unknown, batch?: unknown, now = Date.now()): VerifyResult {
    return verifyCommand(envelope, signature, { pinnedKeys: this.#pinned, selfAgentId: this.#agentId, now, seen: this.#cache }, batch);
  }

  /** Records an accepted command durably; resolves once it is on disk. */
  remember(command: CommandEnvelope, now = Date.now()): Promise<void> {
    this.#cache.remember(command, CLOCK_SKEW_MS);
    return this.#persist(now);
  }

  prune(now = Date.now()): Promise<void> {
    return this.#cache.prune(now) > 0 ? this.#persist(now) : Promise.resolve();
  }

  get size(): number {
    return this.#cache.size;
  }

  #persist(now: number): Promise<void> {
    // Writes are chained so the last one on disk holds every remembered entry.
    const next = this.#writes.then(async () => {
      this.#cache.prune(now);
      await writeFileAtomic(this.#file, JSON.stringify({ version: 1, entries: [...this.#cache.entries()] }));
    });
    this.#writes = next.catch(() => undefined);
    return next;
  }
}
