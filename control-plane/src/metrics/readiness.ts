import type { DatabaseProbe } from './database.ts';
import { withTimeout } from './database.ts';

/** A check that hangs this long fails: a load balancer's probe should not wait on us. */
const CHECK_TIMEOUT_MS = 2_000;

export interface CheckResult {
  ok: boolean;
  /** Why it failed, in words that reveal no path, address or driver detail. */
  message?: string;
  /** Migrations not applied (migrations check only). */
  pending?: number;
}

export interface Readiness {
  ready: boolean;
  checks: { database: CheckResult; migrations: CheckResult; agent_hub: CheckResult };
}

/** What readiness looks at: the database, and whether agents (and commands) would be taken now. */
export interface ReadinessSources {
  database: DatabaseProbe;
  /** Started and not closing; undefined when this app runs no hub. */
  hubAccepting(): boolean | undefined;
}

function failure(message: string): CheckResult {
  return { ok: false, message };
}

async function database(probe: DatabaseProbe): Promise<CheckResult> {
  try {
    await withTimeout(probe.ping(), CHECK_TIMEOUT_MS, 'the database');
    return { ok: true };
  } catch {
    return failure('the database did not answer a trivial query');
  }
}

async function migrations(probe: DatabaseProbe): Promise<CheckResult> {
  try {
    const pending = await withTimeout(probe.pendingMigrations(), CHECK_TIMEOUT_MS, 'the database');
    return pending === 0 ? { ok: true, pending } : { ok: false, pending, message: `${pending} migration${pending === 1 ? '' : 's'} not applied` };
  } catch {
    return failure('the applied migrations could not be read');
  }
}

/**
 * The bus delivers through the hub of this process (in-process bus); with a
 * LISTEN/NOTIFY bus its listening connection must be up too.
 */
function agentHub(sources: ReadinessSources): CheckResult {
  const accepting = sources.hubAccepting();
  if (accepting === undefined) return failure('the agent hub is not running');
  if (!accepting) return failure('the agent hub is not taking connections (starting or shutting down)');
  const notify = sources.database.notify?.();
  if (notify && !notify.listening) return failure('the command bus is not listening for notifications');
  return { ok: true };
}

/** Every check, run together; ready only when all pass. */
export async function checkReadiness(sources: ReadinessSources): Promise<Readiness> {
  const [db, mig] = await Promise.all([database(sources.database), migrations(sources.database)]);
  const checks = { database: db, migrations: mig, agent_hub: agentHub(sources) };
  return { ready: db.ok && mig.ok && checks.agent_hub.ok, checks };
}
