import type { Logger } from 'pino';
import { hardenResultSchema } from '@vmkit/protocol';
import type { Db } from '../../db/index.ts';
import { getAgentByInstance } from '../../db/agents.ts';
import { insertAudit } from '../../db/audit.ts';
import { finishHardenFollowUp, insertHardenFollowUp, listOwedHardenFollowUps } from '../../db/harden-follow-ups.ts';
import { getInstance, getInstanceById, updateInstance } from '../../db/instances.ts';
import type { InstanceRow } from '../../db/instances.ts';
import { ApiError } from '../../errors.ts';
import type { CommandBus, CommandOutcome } from '../../hub/command-bus.ts';
import { AgentCommandError, CommandAbortedError, CommandBusError } from '../../hub/errors.ts';
import type { DeployKeyStore } from './deploy-keys.ts';
import { HardenRun, HardenRuns } from './runs.ts';
import type { HardenAnswer, RunError } from './runs.ts';
import type { Verification, VerifyTarget } from './verify-ssh.ts';

/** How long the agent has to finish hardening once the command is sent. */
const HARDEN_TIMEOUT_MS = 5 * 60_000;
/**
 * After a restart, how long past the command's expiry its result is still awaited: an
 * agent re-sends a journaled result once it reconnects, with backoff up to a minute.
 */
const RESUME_GRACE_MS = 10 * 60_000;

/** The audit action of a finished follow-up (the request's own row is `instances.harden`). */
export const HARDEN_COMPLETED_ACTION = 'instances.harden.completed';

export interface HardenDeps {
  db: Db;
  bus: CommandBus;
  /** Connected to this process or (several processes on PostgreSQL) to another live one. */
  isConnected(agentId: string): boolean | Promise<boolean>;
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
  /** The API key that asked, for the audit row of the outcome. */
  keyId?: string | null | undefined;
  /** The SSH crypto/forwarding policy; default on. */
  sshPolicy?: boolean | undefined;
}

/** The outside check, or why it did not run. */
export type VerificationReport = Verification | { ok: null; skipped: string } | (Verification & { error: string });

/** What the follow-up of one command needs, however it was started. */
interface FollowUp {
  run: HardenRun;
  keys: string[];
  keyId: string | null;
}

/**
 * harden_vm's domain logic: checks the instance and its agent, sends the signed
 * `harden` command, then verifies from outside over SSH what an attacker would see.
 * That follow-up is recorded as owed with the command, so a control plane killed
 * before it ran finishes it after its restart (resumeOwed).
 */
export class HardenService {
  readonly runs = new HardenRuns();
  readonly #d: HardenDeps;
  /** Runs being started (command not stored yet), by instance id. */
  readonly #starting = new Map<string, Promise<HardenRun>>();

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
    if (!(await this.#d.isConnected(agent.id))) {
      throw new ApiError('agent_not_connected', `The vmkit-agent of instance ${instance.id} is not connected; start it or wait for it to reconnect.`);
    }
    // No await between this check and the registration below: parallel calls join one run.
    const joined = this.runs.activeFor(instance.id) ?? this.#starting.get(instance.id);
    if (joined) return joined;
    const starting = this.#start(req, instance, agent.id);
    this.#starting.set(instance.id, starting);
    const forget = () => {
      if (this.#starting.get(instance.id) === starting) this.#starting.delete(instance.id);
    };
    starting.then(forget, forget);
    return starting;
  }

  async #start(req: HardenRequest, instance: InstanceRow, agentId: string): Promise<HardenRun> {
    const { db } = this.#d;
    const workspaceKey = await this.#d.deployKeys.get(req.workspaceId);
    const keys = req.deployKeys && req.deployKeys.length > 0 ? req.deployKeys : [workspaceKey.publicKey];
    const keyId = req.keyId ?? null;
    let run: HardenRun | undefined;
    let idKnown: () => void = () => undefined;
    const created = new Promise<void>((resolve) => (idKnown = resolve));
    const outcome = this.#d.bus.send(
      agentId,
      'harden',
      // ssh_policy goes on the wire only to opt out: agents from before the policy refuse unknown fields.
      { deploy_keys: keys, dry_run: false, ...(req.sshPolicy === false ? { ssh_policy: false } : {}) },
      {
        timeoutMs: HARDEN_TIMEOUT_MS,
        requireConnected: true,
        onCommandId: async (id) => {
          // After the command's insert and before its delivery (the bus waits for this).
          await insertHardenFollowUp(db, { commandId: id, workspaceId: req.workspaceId, instanceId: instance.id, keyId }, this.#d.now());
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
    this.#follow({ run, keys, keyId }, outcome);
    return run;
  }

  /**
   * At start-up: every follow-up a previous process left owed gets a run again (so
   * pollers and new harden calls find it) and is finished once the command's result is
   * there: at once when it is stored already, or when the agent re-sends it.
   */
  async resumeOwed(): Promise<number> {
    const { db, bus } = this.#d;
    let resumed = 0;
    for (const owed of await listOwedHardenFollowUps(db)) {
      if (this.runs.get(owed.commandId, this.#d.now())) continue;
      const cmd = await bus.get(owed.commandId);
      const run = new HardenRun(owed.commandId, owed.workspaceId, owed.instanceId);
      this.runs.add(run);
      const keys = cmd?.envelope.type === 'harden' ? cmd.envelope.params.deploy_keys : [];
      const outcome = bus.resume(owed.commandId, {
        timeoutMs: Math.max(0, (cmd?.expiresAt ?? 0) - Date.now()) + RESUME_GRACE_MS,
        onProgress: (p) => run.push(p),
      });
      this.#follow({ run, keys, keyId: owed.keyId }, outcome);
      resumed += 1;
    }
    if (resumed > 0) this.#d.logger.info({ count: resumed }, 'harden: resumed follow-ups a restart left owed');
    return resumed;
  }

  #follow(f: FollowUp, outcome: Promise<CommandOutcome>): void {
    void outcome.then(
      (res) => this.#succeed(f, res.output),
      (err: unknown) => this.#fail(f, err),
    );
  }

  async #succeed(f: FollowUp, output: Record<string, unknown>): Promise<void> {
    const { run } = f;
    try {
      const result = hardenResultSchema.safeParse(output);
      if (!result.success) {
        const issue = result.error.issues[0];
        const where = issue?.path.join('.') || 'output';
        await this.#fail(f, new ApiError('command_failed', `The agent answered a harden result the protocol does not allow (${where}: ${issue?.message ?? 'invalid'}).`));
        return;
      }
      const status = result.data.status;
      if (status !== 'hardened' && status !== 'already_hardened') {
        await this.#fail(f, new ApiError('command_failed', `The agent answered an unexpected status ${JSON.stringify(status)}.`));
        return;
      }
      // Read now, not when the command was sent: after a restart this is all we have.
      const instance = await getInstanceById(this.#d.db, run.instanceId);
      const workspaceKey = await this.#d.deployKeys.get(run.workspaceId);
      // Only a VM the agent says is hardened is worth an SSH round of checks.
      const verification = await this.#verify(instance?.sshHost ?? null, instance?.sshPort ?? null, workspaceKey.privateKey, f.keys, workspaceKey.publicKey);
      const at = this.#d.now();
      await updateInstance(this.#d.db, run.instanceId, { hardenedAt: at }, at);
      const answer: HardenAnswer = { ...result.data, status, instance_id: run.instanceId, command_id: run.commandId, verification };
      await this.#record(f, answer, { status: 200, errorKey: null }, at);
      run.succeed(answer, at);
    } catch (err) {
      this.#d.logger.error({ err, command_id: run.commandId }, 'harden follow-up failed');
      run.fail({ error: 'internal', message: 'Hardening finished but its follow-up failed.' }, this.#d.now());
    }
  }

  async #fail(f: FollowUp, err: unknown): Promise<void> {
    const api = toApiError(err);
    const error: RunError = { error: api.key, message: api.message, ...(api.extra ?? {}) };
    const at = this.#d.now();
    try {
      // The bus closing (shutdown) is no outcome: the follow-up stays owed for the next start.
      if (!(err instanceof CommandAbortedError)) await this.#record(f, error, { status: api.status, errorKey: api.key }, at);
    } catch (e) {
      this.#d.logger.error({ err: e, command_id: f.run.commandId }, 'harden: could not record the outcome');
    }
    f.run.fail(error, at);
  }

  /** The follow-up is done: its answer kept for pollers, one audit row (only the first finisher writes). */
  async #record(f: FollowUp, answer: Record<string, unknown>, outcome: { status: number; errorKey: string | null }, at: number): Promise<void> {
    const { run } = f;
    if (!(await finishHardenFollowUp(this.#d.db, run.commandId, answer, at))) return;
    await insertAudit(this.#d.db, {
      at,
      workspaceId: run.workspaceId,
      keyId: f.keyId,
      channel: 'agent',
      tool: null,
      action: HARDEN_COMPLETED_ACTION,
      method: null,
      route: null,
      targetIds: { id: run.instanceId, command_id: run.commandId },
      status: outcome.status,
      errorKey: outcome.errorKey,
      requestId: null,
      clientAddress: null,
    });
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
    // A failure names the agent's own key (lockout_risk, sshd_validation_failed, ...); a
    // refusal (bad_signature, expired, ...) is agent_refused with the reason in the message.
    const key = err.key === 'command_failed' ? err.reason : err.key;
    const output = err.output;
    return new ApiError(key, err.message, output ? { detail: output } : undefined);
  }
  if (err instanceof CommandBusError) return new ApiError(err.key, err.message);
  return new ApiError('internal');
}
