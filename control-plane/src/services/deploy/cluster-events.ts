/**
 * A deploy's changes wake long-polls on every process (several on one PostgreSQL): the
 * shared change-event relay (../change-events/cluster.ts) on the deploys' own channel.
 */
import type { ClusterNode } from '../../hub/cluster.ts';
import { ClusterChangeEvents, encodeChangeEvent, parseChangeEvent } from '../change-events/cluster.ts';
import type { ClusterChangeEventsOptions } from '../change-events/cluster.ts';

export const DEPLOY_EVENTS_CHANNEL = 'vmkit_deploy_events';

export function encodeDeployEvent(deployId: string, origin: string): string {
  return encodeChangeEvent(deployId, origin);
}

export function parseDeployEvent(payload: string): { deployId: string; origin: string } | undefined {
  const n = parseChangeEvent(payload);
  return n && { deployId: n.id, origin: n.origin };
}

export const ClusterDeployEvents = {
  /** The relay of deploy changes through the node's LISTEN connection. */
  attach(node: Pick<ClusterNode, 'subscribe'>, opts: Omit<ClusterChangeEventsOptions, 'channel'>): ClusterChangeEvents {
    return ClusterChangeEvents.attach(node, { ...opts, channel: DEPLOY_EVENTS_CHANNEL });
  },
};
