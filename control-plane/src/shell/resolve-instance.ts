import { idPattern } from '@vmkit/protocol';
import type { Db } from '../db/index.ts';
import { findLiveInstanceByName, getInstanceWithAgent } from '../db/instances.ts';
import type { InstanceWithAgent } from '../db/instances.ts';
import { ApiError } from '../errors.ts';

const ID = idPattern('instance');

/**
 * An instance of the workspace named by id or by name (what operators type after
 * `vmkit shell` or before `@` in `ssh`). A name means the live instance of that name, in
 * any case, as `vmkit instances` reads names: names are unique among live instances
 * (`instances_name_per_workspace`), so it is never ambiguous, and a destroyed instance has
 * given its name up.
 */
export async function resolveInstance(db: Db, workspaceId: string, ref: string): Promise<InstanceWithAgent> {
  if (ID.test(ref)) {
    const found = await getInstanceWithAgent(db, workspaceId, ref);
    if (found) return found;
  }
  const named = await findLiveInstanceByName(db, workspaceId, ref);
  const found = named && (await getInstanceWithAgent(db, workspaceId, named.id));
  if (!found) throw new ApiError('instance_not_found', `No instance "${ref.slice(0, 100)}" in this workspace.`);
  return found;
}
