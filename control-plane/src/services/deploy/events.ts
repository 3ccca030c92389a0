/** A deploy's changes wake its long-polls: the shared change events (../change-events/events.ts), keyed by deploy id. */
export { ChangeEvents as DeployEvents, ChangeWatch as DeployWatch } from '../change-events/events.ts';
