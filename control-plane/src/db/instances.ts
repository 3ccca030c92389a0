import { and, asc, desc, eq, inArray, notInArray, sql } from 'drizzle-orm';
import { newId } from '@vmkit/protocol';
import { prepared } from './index.ts';
import type { Db } from './index.ts';
import type { AgentRow } from './agents.ts';
import { isUniqueViolation } from './errors.ts';
import type { Row } from './schema.ts';
import { changed } from './tx.ts';
import { ApiError } from '../errors.ts';

export type InstanceRow = Row<'instances'>;
export type InstanceStatus = 'awaiting_agent' | 'provisioning' | 'running' | 'stopped' | 'failed' | 'destroyed';

export interface NewInstance {
  workspaceId: string;
  name: string;
  provider: string;
  status?: InstanceStatus;
  environmentId?: string | null;
  sshHost?: string | null;
  sshPort?: number | null;
  providerRef?: Record<string, unknown> | null;
  /** Lets a caller choose the id (e.g. one it already gave a provider). */
  id?: string;
}

export interface InstanceWithAgent {
  instance: InstanceRow;
  agent: AgentRow | null;
}

export async function createInstance(db: Db, input: NewInstance, now = Date.now()): Promise<InstanceRow> {
  const row: InstanceRow = {
    id: input.id ?? newId('instance'),
    workspaceId: input.workspaceId,
    name: input.name,
    environmentId: input.environmentId ?? null,
    provider: input.provider,
    status: input.status ?? 'provisioning',
    statusReason: null,
    sshHost: input.sshHost ?? null,
    sshPort: input.sshPort ?? null,
    hardenedAt: null,
    createdAt: now,
    updatedAt: now,
    providerRef: input.providerRef ?? null,
    sshHostKeys: null,
  };
  try {
    await db.orm.insert(db.t.instances).values(row);
  } catch (err) {
    throw nameTakenOr(err, row.name);
  }
  return row;
}

/** The unique index `instances_name_per_workspace` said no: the caller's 409, not a crash. */
export function nameTakenOr(err: unknown, name: string): unknown {
  if (isUniqueViolation(err, 'instances_name_per_workspace')) {
    return new ApiError('instance_name_taken', `An instance named ${JSON.stringify(name.slice(0, 100))} already exists in this workspace; choose another name or delete that one.`);
  }
  return err;
}

export async function getInstance(db: Db, workspaceId: string, id: string): Promise<InstanceRow | undefined> {
  const { instances } = db.t;
  const [row] = await db.orm
    .select()
    .from(instances)
    .where(and(eq(instances.workspaceId, workspaceId), eq(instances.id, id)));
  return row;
}

/** Only for internal callers that already proved the workspace (hub, services). */
export async function getInstanceById(db: Db, id: string): Promise<InstanceRow | undefined> {
  const { instances } = db.t;
  // Prepared once: building the query each time cost more than a handshake's signature check.
  const stmt = prepared(db, 'instances_get_by_id', () =>
    db.orm.select().from(instances).where(eq(instances.id, sql.placeholder('id'))).prepare('instances_get_by_id'),
  );
  const [row] = await stmt.execute({ id });
  return row;
}

export async function getInstanceWithAgent(db: Db, workspaceId: string, id: string): Promise<InstanceWithAgent | undefined> {
  const { agents, instances } = db.t;
  const [row] = await db.orm
    .select()
    .from(instances)
    .leftJoin(agents, eq(agents.instanceId, instances.id))
    .where(and(eq(instances.workspaceId, workspaceId), eq(instances.id, id)));
  return row ? { instance: row.instances, agent: row.agents } : undefined;
}

export async function listInstancesWithAgents(db: Db, workspaceId: string): Promise<InstanceWithAgent[]> {
  const { agents, instances } = db.t;
  const stmt = prepared(db, 'instances_list_with_agents', () =>
    db.orm
      .select()
      .from(instances)
      .leftJoin(agents, eq(agents.instanceId, instances.id))
      .where(eq(instances.workspaceId, sql.placeholder('workspaceId')))
      .orderBy(asc(instances.id))
      .prepare('instances_list_with_agents'),
  );
  return (await stmt.execute({ workspaceId })).map((r) => ({ instance: r.instances, agent: r.agents }));
}

export type InstancePatch = Partial<
  Pick<InstanceRow, 'name' | 'status' | 'statusReason' | 'environmentId' | 'sshHost' | 'sshPort' | 'hardenedAt' | 'providerRef'>
>;

/** Instances of every workspace in these statuses (start-up reconciliation only). */
export async function listInstancesInStatus(db: Db, statuses: InstanceStatus[]): Promise<InstanceWithAgent[]> {
  const { agents, instances } = db.t;
  const rows = await db.orm
    .select()
    .from(instances)
    .leftJoin(agents, eq(agents.instanceId, instances.id))
    .where(inArray(instances.status, statuses))
    .orderBy(asc(instances.id));
  return rows.map((r) => ({ instance: r.instances, agent: r.agents }));
}

/**
 * Sets the status only while the instance is still in one of `from`; says whether it
 * moved. Lets a watcher and a reconciler race without undoing each other.
 */
export async function moveInstanceStatus(
  db: Db,
  id: string,
  from: InstanceStatus[],
  patch: InstancePatch & { status: InstanceStatus },
  now = Date.now(),
): Promise<boolean> {
  const { instances } = db.t;
  const r = await db.orm
    .update(instances)
    .set({ ...patch, updatedAt: now })
    .where(and(eq(instances.id, id), inArray(instances.status, from)));
  return changed(r) === 1;
}

/**
 * `provisioning` or `awaiting_agent` → `running`, in one prepared conditional UPDATE: it
 * runs at every agent handshake, and an instance already running is simply not matched.
 */
export async function markInstanceRunning(db: Db, id: string, now = Date.now()): Promise<boolean> {
  const { instances } = db.t;
  const stmt = prepared(db, 'instances_mark_running', () =>
    db.orm
      .update(instances)
      .set({ status: 'running', statusReason: null, updatedAt: sql`${sql.placeholder('now')}` })
      .where(and(eq(instances.id, sql.placeholder('id')), inArray(instances.status, ['provisioning', 'awaiting_agent'])))
      .prepare('instances_mark_running'),
  );
  return changed(await stmt.execute({ id, now })) === 1;
}

export async function updateInstance(db: Db, id: string, patch: InstancePatch, now = Date.now()): Promise<void> {
  const { instances } = db.t;
  await db.orm
    .update(instances)
    .set({ ...patch, updatedAt: now })
    .where(eq(instances.id, id));
}


/** The newest instance of an environment that is neither failed nor destroyed (the VM deploy reuses). */
export async function findLiveInstanceOfEnvironment(db: Db, workspaceId: string, environmentId: string): Promise<InstanceRow | undefined> {
  const { instances } = db.t;
  const [row] = await db.orm
    .select()
    .from(instances)
    .where(and(eq(instances.workspaceId, workspaceId), eq(instances.environmentId, environmentId), notInArray(instances.status, ['failed', 'destroyed'])))
    .orderBy(desc(instances.id))
    .limit(1);
  return row;
}

/** The live (not destroyed) instance of the workspace with this name, in any case; the unique index allows one at most. */
export async function findLiveInstanceByName(db: Db, workspaceId: string, name: string): Promise<InstanceRow | undefined> {
  const { instances } = db.t;
  const [row] = await db.orm
    .select()
    .from(instances)
    .where(and(eq(instances.workspaceId, workspaceId), sql`lower(${instances.name}) = lower(${name})`, sql`${instances.status} <> 'destroyed'`));
  return row;
}

/** `base`, or `base-2`, `base-3`, ... : the first name no live instance of the workspace holds. */
export async function freeInstanceName(db: Db, workspaceId: string, base: string): Promise<string> {
  const { instances } = db.t;
  const live = await db.orm
    .select({ name: instances.name })
    .from(instances)
    .where(and(eq(instances.workspaceId, workspaceId), sql`${instances.status} <> 'destroyed'`));
  const taken = new Set(live.map((r) => r.name.toLowerCase()));
  for (let n = 1; ; n++) {
    const suffix = n === 1 ? '' : `-${n}`;
    const name = base.slice(0, 63 - suffix.length).replace(/-+$/, '') + suffix;
    if (!taken.has(name.toLowerCase())) return name;
  }
}
