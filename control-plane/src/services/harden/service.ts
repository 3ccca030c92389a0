import type { Logger } from 'pino';
import { isErrorKey } from '@vmkit/protocol';
import type { Db } from '../../db/index.ts';
import { getAgentByInstance } from '../../db/agents.ts';
import { getInstance, updateInstance } from '../../db/instances.ts';
import { ApiError } from '../../errors.ts';
import type { CommandBus } from '../../hub/command-bus.ts';
import { AgentCommandError, CommandBusError } from '../../hub/errors.ts';
import type { DeployKeyStore } from './deploy-keys.ts';
import { HardenRun, HardenRuns } from './runs.ts';
import type { Verification, VerifyTarget } from './verify-ssh.ts';

/** How long the agent has to finish hardening once the command is sent. */
const HARDEN_TIMEOUT_MS = 5 * 60_000;

export interface HardenDeps {
  db: Db;
  bus: CommandBus;
  isConnected(agentId: string): boolean;
  deployKeys: DeployKeyStore;
  verify(target: VerifyTarget): Promise<Verification>;
  now(): number;
  logger: Logger;
}

export interface HardenRequest {
  workspaceId: string;
  instanceId: string;
  /** OpenSSH public key lines for kamal; none = the workspace's own deploy key. */
  deployKeys?: string[] | undefined;
}

/** The outside check, or why it did not run. */
export type VerificationReport = Verification | { ok: null; skipped: string } | (Verification & { error: string });

/**
 * harden_vm's domain logic: checks the instance and its agent, sends the signed
 * `harden` command, then verifies from outside over SSH what an attacker would see.
 */
export class HardenService {
  readonly runs = new HardenRuns();
  readonly #d: HardenDeps;

  constructor(deps: HardenDeps) {
    this.#d = deps;
  }

  /** Starts hardening (or joins the run under way) and returns at once. */
  async begin(req: HardenRequest): Promise<HardenRun> {
    const { db } = this.#d;
    const instance = await getInstance(db, req.workspaceId, req.instanceId);
    if (!instance || instance.status === 'destroyed') {
      throw new ApiError('vm_not_provisioned', `No VM is associated with instance id ${req.instanceId} in this workspace.`);
    }
    const agent = await getAgentByInstance(db, instance.id);
    if (!agent || agent.state === 'revoked') {
      throw new ApiError('vm_not_provisioned', `Instance ${instance.id} has no enrolled vmkit-agent, so no VM is associated with it yet.`);
    }
    if (!this.#d.isConnected(agent.id)) {
      throw new ApiError('agent_not_connected', `The vmkit-agent of instance ${instance.id} is not connected; start it or wait for it to reconnect.`);
    }
    const running = this.runs.activeFor(instance.id);
    if (running) return running;

    const workspaceKey = await this.#d.deployKeys.get(req.workspaceId);
    const keys = req.deployKeys && req.deployKeys.length > 0 ? req.deployKeys : [workspaceKey.publicKey];
    let run: HardenRun | undefined;
    let idKnown: () => void = () => undefined;
    const created = new Promise<void>((resolve) => (idKnown = resolve));
    const outcome = this.#d.bus.send(
      agent.id,
      'harden',
      { deploy_keys: keys, dry_run: false },
      {
        timeoutMs: HARDEN_TIMEOUT_MS,
        requireConnected: true,
        onCommandId: (id) => {
          run = new HardenRun(id, req.workspaceId, instance.id);
          this.runs.add(run);
          idKnown();
        },
        onProgress: (p) => run?.push(p),
      },
    );
    // Either the command is persisted (we have its id) or send failed before that.
    await Promise.race([created, outcome.then(() => undefined)]).catch((err: unknown) => {
      throw toApiError(err);
    });
    if (!run) throw new ApiError('internal', 'The harden command was not created.');
    const started = run;
    void outcome.then(
      async (res) => {
        try {
          const status = res.output.status;
          if (status !== 'hardened' && status !== 'already_hardened') {
            started.fail({ error: 'command_failed', message: `The agent answered an unexpected status ${JSON.stringify(status)}.` }, this.#d.now());
            return;
          }
          // Only a VM the agent says is hardened is worth an SSH round of checks.
          const verification = await this.#verify(instance.sshHost, instance.sshPort, workspaceKey.privateKey, keys, workspaceKey.publicKey);
          const at = this.#d.now();
          await updateInstance(db, instance.id, { hardenedAt: at }, at);
          started.succeed({ ...res.output, status, instance_id: instance.id, command_id: started.commandId, verification }, at);
        } catch (err) {
          this.#d.logger.error({ err, command_id: started.commandId }, 'harden follow-up failed');
          started.fail({ error: 'internal', message: 'Hardening finished but its follow-up failed.' }, this.#d.now());
        }
      },
      (err: unknown) => {
        const api = toApiError(err);
        started.fail({ error: api.key, message: api.message, ...(api.extra ?? {}) }, this.#d.now());
      },
    );
    return started;
  }

  async #verify(
    host: string | null,
    port: number | null,
    privateKey: string,
    usedKeys: string[],
    workspacePublicKey: string,
  ): Promise<VerificationReport> {
    if (!host) return { ok: null, skipped: 'the instance has no SSH address on record' };
    if (!usedKeys.includes(workspacePublicKey)) {
      return { ok: null, skipped: "the caller's own deploy keys were installed; the control plane holds no private half to log in as kamal" };
    }
    try {
      return await this.#d.verify({ host, port: port ?? 22, privateKey });
    } catch (err) {
      // A check that could not run is a failed check, reported, never hidden.
      return { ok: false, checks: [], offered_methods: [], error: (err as Error).message };
    }
  }
}

/** Local and wire errors of the command bus, as the REST API names them. */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof AgentCommandError) {
    // The agent's own key (lockout_risk, sshd_validation_failed, ...) when we know it.
    const key = isErrorKey(err.reason) ? err.reason : err.key;
    const output = err.output;
    return new ApiError(key, err.message, output ? { detail: output } : undefined);
  }
  if (err instanceof CommandBusError) return new ApiError(err.key, err.message);
  return new ApiError('internal');
}
