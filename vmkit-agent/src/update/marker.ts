import { readFile } from 'node:fs/promises';
import { agentVersionSchema, idSchema } from '@vmkit/protocol';
import { z } from 'zod';
import { removeDurably, writeFileAtomic } from '../durable.ts';

/**
 * `<state>/update.json`: an update in flight across a restart. Written before `current`
 * is switched; read at every start until the update is confirmed (the new version
 * connected) or rolled back (it did not, in time), then removed once the outcome is
 * journaled as the agent.update command's result.
 */
export const updateMarkerSchema = z.strictObject({
  version: z.literal(1),
  command_id: idSchema('command'),
  from_version: agentVersionSchema,
  to_version: agentVersionSchema,
  /** The install root whose `current` was switched. */
  root: z.string().min(1).max(4096),
  switched_at: z.number().int().nonnegative(),
  /** The new version must be connected by then, or it is rolled back. */
  confirm_by: z.number().int().nonnegative(),
  /** Starts of the new version so far: one that keeps crashing is rolled back too. */
  starts: z.number().int().nonnegative(),
  state: z.enum(['pending', 'rolled_back']),
  reason: z.string().max(1024).optional(),
});
export type UpdateMarker = z.infer<typeof updateMarkerSchema>;

export async function readMarker(file: string): Promise<UpdateMarker | undefined> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const parsed = updateMarkerSchema.safeParse(JSON.parse(text));
  if (!parsed.success) throw new Error(`update marker ${file} is invalid: ${parsed.error.issues[0]?.message ?? 'unknown problem'}`);
  return parsed.data;
}

export function writeMarker(file: string, marker: UpdateMarker): Promise<void> {
  return writeFileAtomic(file, `${JSON.stringify(updateMarkerSchema.parse(marker), null, 2)}\n`, 0o600);
}

export function removeMarker(file: string): Promise<void> {
  return removeDurably(file);
}
