import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CLOCK_SKEW_MS, PROTOCOL_VERSION, isId, resultMessage } from '@vmkit/protocol';
import type { CommandEnvelope, ErrorKey, MessageOf } from '@vmkit/protocol';
import { z } from 'zod';
import { removeDurably, writeFileAtomic } from './durable.ts';
import type { Logger } from './log.ts';

export type ResultMsg = MessageOf<'result'>;

/** Unacknowledged results older than this are dropped: the hub has long given up on them. */
export const UNACKED_RETENTION_MS = 7 * 24 * 3600_000;

const recordSchema = z.strictObject({
  version: z.literal(1),
  command_id: z.string(),
  type: z.string().max(64),
  state: z.enum(['running', 'finished']),
  acked: z.boolean(),
  received_at: z.number(),
  /** When the replay cache forgets this command; acked records go at the same time. */
  forget_after: z.number(),
  result: resultMessage.optional(),
});
export type JournalRecord = z.infer<typeof recordSchema>;

/**
 * One file per accepted command under <state>/journal: written `running` before the
 * executor starts, then `finished` with its result (fsync'd before the result is
 * sent), then `acked` once the hub confirms. A record stays until the hub acked it
 * and the command can no longer be replayed, so a re-sent command id gets the same
 * result instead of a second run.
 */
export class ResultJournal {
  readonly #dir: string;
  readonly #records = new Map<string, JournalRecord>();

  private constructor(dir: string) {
    this.#dir = dir;
  }

  /**
   * Loads the journal. A record still `running` means the agent stopped in the
   * middle of that command: it becomes the result `recovered` gives for it (a harden
   * rolled back or completed at start), else a failed result; sent like any other.
   * `pending` keeps it running: its outcome comes later in this process (an
   * agent.update that is confirmed once the new version connects).
   */
  static async open(dir: string, log: Logger, now = Date.now(), recovered?: (commandId: string) => ResultMsg | 'pending' | undefined): Promise<ResultJournal> {
    const j = new ResultJournal(dir);
    for (const name of await readdir(dir)) {
      if (!name.endsWith('.json') || name.startsWith('.')) continue;
      const id = name.slice(0, -'.json'.length);
      let rec: JournalRecord | undefined;
      try {
        const parsed = recordSchema.safeParse(JSON.parse(await readFile(join(dir, name), 'utf8')));
        if (parsed.success && parsed.data.command_id === id && isId('command', id)) rec = parsed.data;
      } catch {
        rec = undefined;
      }
      if (!rec) {
        log.warn('journal record unreadable; skipped', { file: join(dir, name) });
        continue;
      }
      j.#records.set(id, rec);
      const replacement = rec.state === 'running' ? recovered?.(id) : undefined;
      if (replacement === 'pending') {
        log.info('command still in progress across the restart', { command_id: id, type: rec.type });
      } else if (replacement) {
        log.info('interrupted command answered with the outcome of its recovery', { command_id: id, type: rec.type, status: replacement.status });
        await j.finish(id, replacement);
      } else if (rec.state === 'running') {
        log.warn('command was interrupted by an agent restart; reporting it failed', { command_id: id, type: rec.type });
        await j.finish(id, {
          protocol: PROTOCOL_VERSION,
          type: 'result',
          command_id: id,
          status: 'failed',
          error: { key: 'command_interrupted' satisfies ErrorKey, message: 'The agent stopped while running this command; it may have been partly applied.' },
          finished_at: now,
        });
      }
    }
    await j.prune(now);
    return j;
  }

  get(commandId: string): JournalRecord | undefined {
    return this.#records.get(commandId);
  }

  async begin(command: CommandEnvelope, now = Date.now()): Promise<void> {
    await this.#write({
      version: 1,
      command_id: command.id,
      type: command.type,
      state: 'running',
      acked: false,
      received_at: now,
      forget_after: command.expires_at + CLOCK_SKEW_MS,
    });
  }

  async finish(commandId: string, result: ResultMsg): Promise<void> {
    const rec = this.#records.get(commandId);
    if (!rec) throw new Error(`journal has no record of ${commandId}`);
    await this.#write({ ...rec, state: 'finished', result });
  }

  /** The hub has the result. Returns false when there was nothing to acknowledge. */
  async ack(commandId: string): Promise<boolean> {
    const rec = this.#records.get(commandId);
    if (!rec || rec.state !== 'finished' || rec.acked) return false;
    await this.#write({ ...rec, acked: true });
    return true;
  }

  /** Finished results the hub has not acknowledged yet, oldest first. */
  unacked(): ResultMsg[] {
    return [...this.#records.values()]
      .filter((r) => r.state === 'finished' && !r.acked && r.result)
      .map((r) => r.result as ResultMsg)
      .sort((a, b) => a.finished_at - b.finished_at);
  }

  async prune(now = Date.now()): Promise<number> {
    let dropped = 0;
    for (const rec of [...this.#records.values()]) {
      const forgotten = rec.acked && rec.forget_after < now;
      const abandoned = !rec.acked && rec.state === 'finished' && rec.received_at + UNACKED_RETENTION_MS < now;
      if (forgotten || abandoned) {
        this.#records.delete(rec.command_id);
        await removeDurably(this.#file(rec.command_id));
        dropped++;
      }
    }
    return dropped;
  }

  get size(): number {
    return this.#records.size;
  }

  #file(commandId: string): string {
    return join(this.#dir, `${commandId}.json`);
  }

  async #write(rec: JournalRecord): Promise<void> {
    await writeFileAtomic(this.#file(rec.command_id), JSON.stringify(rec));
    this.#records.set(rec.command_id, rec);
  }
}
