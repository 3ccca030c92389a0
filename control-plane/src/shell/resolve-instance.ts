import { and, eq } from 'drizzle-orm';
import { idPattern } from '@vmkit/protocol';
import type { Db } from '../db/index.ts';
import { getInstanceWithAgent } from '../db/instances.ts';
import type { InstanceWithAgent } from '../db/instances.ts';
import { instances } from '../db/schema.ts';
import { ApiError } from '../errors.ts';

const ID = idPattern('instance');

/**
 * An instance of the workspace named by id or by name (what operators type after
 * `vmkit shell` or before `@` in `ssh`). A name two instances share is refused rather
 * than guessed.
 */
export async function resolveInstance(db: Db, workspaceId: string, ref: string): Promise<InstanceWithAgent> {
  if (ID.test(ref)) {
    const found = await getInstanceWithAgent(db, workspaceId, ref);
    if (found) return found;
  }
  const named = db
    .select({ id: instances.id })
    .from(instances)
    .where(and(eq(instances.workspaceId, workspaceId), eq(instances.name, ref)))
    .limit(2)
    .all();
  if (named.length > 1) throw new ApiError('instance_name_ambiguous', `More than one instance is named "${ref.slice(0, 100)}"; use its id.`);
  const only = named[0];
  const found = only && (await getInstanceWithAgent(db, workspaceId, only.id));
  if (!found) throw new ApiError('instance_not_found', `No instance "${ref.slice(0, 100)}" in this workspace.`);
  return found;
}
