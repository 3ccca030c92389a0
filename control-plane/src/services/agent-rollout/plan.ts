/**
 * Which agents a rollout updates, in which order, and every reason to refuse it before
 * anything is stored or sent. Pure: it sees the workspace's instances with their agents
 * and which agents are connected; the service checks the releases and stores the plan.
 */
import { agentPlatformSchema, compareAgentVersions } from '@vmkit/protocol';
import type { AgentPlatform } from '@vmkit/protocol';
import type { AgentRow } from '../../db/agents.ts';
import type { InstanceWithAgent } from '../../db/instances.ts';
import { ApiError } from '../../errors.ts';

export interface RolloutAsk {
  version: string;
  instanceIds?: string[] | undefined;
  percent?: number | undefined;
  allowDowngrade: boolean;
}

export interface PlannedTarget {
  instanceId: string;
  agentId: string;
  platform: AgentPlatform;
  fromVersion: string | null;
}

export interface Fleet {
  /** Every instance of the caller's workspace with its agent (other workspaces' never reach the plan). */
  instances: InstanceWithAgent[];
  isConnected(agentId: string): boolean;
}

/** How many ids a sentence names before it says "and N more". */
const NAMED = 5;

function names(rows: InstanceWithAgent[]): string {
  const shown = rows.slice(0, NAMED).map((r) => `${r.instance.name} (${r.instance.id})`);
  return rows.length > NAMED ? `${shown.join(', ')} and ${rows.length - NAMED} more` : shown.join(', ');
}

/** -1, 0, 1 as compareAgentVersions; undefined when the agent's version is not a release version. */
function compare(running: string | null, wanted: string): number | undefined {
  if (running === null) return undefined;
  try {
    return compareAgentVersions(running, wanted);
  } catch {
    return undefined;
  }
}

type Live = InstanceWithAgent & { agent: AgentRow };

function isLive(r: InstanceWithAgent): r is Live {
  return r.instance.status !== 'destroyed' && r.agent !== null && r.agent.state !== 'revoked';
}

function platformOfRow(r: Live): AgentPlatform | undefined {
  const p = agentPlatformSchema.safeParse(r.agent.platform);
  return p.success ? p.data : undefined;
}

function target(r: Live): PlannedTarget {
  return { instanceId: r.instance.id, agentId: r.agent.id, platform: platformOfRow(r) as AgentPlatform, fromVersion: r.agent.agentVersion };
}

/** The named instances, in the order given; refuses the whole rollout for any one that cannot take it. */
function named(ask: RolloutAsk & { instanceIds: string[] }, fleet: Fleet): Live[] {
  const byId = new Map(fleet.instances.map((r) => [r.instance.id, r]));
  const unknown = ask.instanceIds.filter((id) => !byId.has(id));
  if (unknown.length > 0) {
    throw new ApiError(
      'instance_not_found',
      `No instance ${unknown.slice(0, NAMED).join(', ')}${unknown.length > NAMED ? ` (and ${unknown.length - NAMED} more)` : ''} exists in this workspace; nothing was started.`,
    );
  }
  const rows = ask.instanceIds.map((id) => byId.get(id) as InstanceWithAgent);
  const noAgent = rows.filter((r) => !isLive(r));
  if (noAgent.length > 0) throw new ApiError('vm_not_provisioned', `${names(noAgent)} ${noAgent.length > 1 ? 'have' : 'has'} no enrolled vmkit-agent; nothing was started.`);
  const live = rows as Live[];
  const offline = live.filter((r) => !fleet.isConnected(r.agent.id));
  if (offline.length > 0) {
    throw new ApiError('agent_not_connected', `The vmkit-agent of ${names(offline)} is not connected; an update needs it online. Nothing was started.`);
  }
  return live;
}

/**
 * percent of the workspace's enrolled agents, taken from those that can take the update
 * (connected, platform told, not on the version yet), oldest instance first. Agents older
 * than self-update are left out rather than blocking every percent rollout of the fleet.
 */
function byPercent(ask: RolloutAsk & { percent: number }, fleet: Fleet): Live[] {
  const live = fleet.instances.filter(isLive);
  const want = Math.ceil((live.length * ask.percent) / 100);
  const candidates = live
    .filter((r) => fleet.isConnected(r.agent.id) && platformOfRow(r) !== undefined && r.agent.agentVersion !== ask.version)
    .filter((r) => ask.allowDowngrade || (compare(r.agent.agentVersion, ask.version) ?? -1) < 0)
    .sort((a, b) => (a.instance.id < b.instance.id ? -1 : a.instance.id > b.instance.id ? 1 : 0));
  if (candidates.length === 0) {
    throw new ApiError(
      'conflict',
      `No agent to update: of the ${live.length} enrolled agent${live.length === 1 ? '' : 's'} of this workspace, none is connected, self-updating and running a version ${ask.allowDowngrade ? 'other than' : 'older than'} ${ask.version}; nothing was started.`,
    );
  }
  return candidates.slice(0, want);
}

/** The rollout's targets in order, or the ApiError that refuses it. */
export function planRollout(ask: RolloutAsk, fleet: Fleet): PlannedTarget[] {
  const rows =
    ask.instanceIds !== undefined ? named({ ...ask, instanceIds: ask.instanceIds }, fleet) : byPercent({ ...ask, percent: ask.percent ?? 0 }, fleet);
  const unknownPlatform = rows.filter((r) => platformOfRow(r) === undefined);
  if (unknownPlatform.length > 0) {
    throw new ApiError(
      'conflict',
      `The vmkit-agent of ${names(unknownPlatform)} has not told its platform: it is older than self-update (or never connected since), so it cannot take agent.update. Install the current release with install.sh; nothing was started.`,
    );
  }
  if (!ask.allowDowngrade) {
    const newer = rows.filter((r) => (compare(r.agent.agentVersion, ask.version) ?? 0) > 0);
    if (newer.length > 0) {
      throw new ApiError(
        'invalid_request',
        `Invalid request: ${ask.version} is older than the vmkit-agent running on ${names(newer)}; a downgrade needs allow_downgrade: true. Nothing was started.`,
      );
    }
  }
  return rows.map(target);
}
