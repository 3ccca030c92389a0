import { z } from 'zod';
import { errorKeySchema, isErrorKey, sshPublicKeySchema } from '@vmkit/protocol';
import type { ApiPlugin } from '../app.ts';
import { authOf } from '../auth/hooks.ts';
import { getCommand } from '../db/commands.ts';
import { getHardenFollowUp } from '../db/harden-follow-ups.ts';
import { ApiError } from '../errors.ts';
import { hardenServiceOf as serviceOf } from '../services/harden/context.ts';
import type { HardenRun } from '../services/harden/runs.ts';
import type { StoredResult } from '../hub/store.ts';
import { IdParams } from './views.ts';

/** Longest a REST caller may ask to wait for hardening to finish. */
const MAX_WAIT_MS = 120_000;

const HardenBody = z
  .strictObject({
    deploy_keys: z
      .array(sshPublicKeySchema)
      .max(64)
      .optional()
      .describe("OpenSSH public keys for kamal; default: the workspace's own deploy key"),
    ssh_policy: z
      .boolean()
      .default(true)
      .describe(
        'Also apply the SSH policy: modern key exchange, ciphers, MACs and host-key algorithms, X11 and agent forwarding off, ' +
          'MaxAuthTries 3, LoginGraceTime 30 (TCP forwarding stays for Kamal). false leaves those settings as they are',
      ),
    wait_ms: z
      .number()
      .int()
      .min(0)
      .max(MAX_WAIT_MS)
      .default(60_000)
      .describe('How long to wait for the result before answering 202 with the command id'),
  })
  .default({ wait_ms: 60_000, ssh_policy: true });

const Step = z.looseObject({ step: z.string(), changed: z.boolean() });
const HardenAnswer = z.looseObject({
  status: z.enum(['hardened', 'already_hardened', 'running']),
  instance_id: z.string(),
  command_id: z.string(),
  steps: z.array(Step).optional(),
  verification: z.record(z.string(), z.unknown()).optional(),
});

const CommandQuery = z.strictObject({
  after_seq: z.coerce.number().int().min(-1).default(-1).describe('only progress entries after this seq'),
  wait_ms: z.coerce.number().int().min(0).max(30_000).default(0).describe('long-poll: wait this long for news'),
});

const CommandView = z.object({
  id: z.string(),
  instance_id: z.string(),
  type: z.string(),
  state: z.string(),
  progress: z.array(
    z.object({ seq: z.number(), step: z.string(), state: z.string(), message: z.string().optional() }),
  ),
  result: z.record(z.string(), z.unknown()).nullable(),
  error: z.looseObject({ error: errorKeySchema, message: z.string() }).nullable(),
});

function failure(run: HardenRun): ApiError {
  const err = run.error ?? { error: 'command_failed', message: 'Hardening failed.' };
  const { error, message, ...extra } = err;
  return new ApiError(error, message, Object.keys(extra).length ? extra : undefined);
}

export const hardenRoutes: ApiPlugin = (app, { ctx }) => {
  // Follow-ups a killed process left owed are finished by this one.
  app.addHook('onReady', async () => {
    if (ctx.commandBus && ctx.hub) await serviceOf(ctx).resumeOwed();
  });

  app.post(
    '/api/instances/:id/harden',
    {
      config: { scope: 'instances:harden', action: 'instances.harden' },
      schema: {
        summary: 'Harden the VM: kamal user, docker group, deploy key, sshd without root or passwords; verified over SSH',
        params: IdParams,
        body: HardenBody,
        response: { 200: HardenAnswer, 202: HardenAnswer },
      },
    },
    async (request, reply) => {
      const auth = authOf(request);
      const run = await serviceOf(ctx).begin({
        workspaceId: auth.workspaceId,
        instanceId: request.params.id,
        deployKeys: request.body.deploy_keys,
        keyId: auth.keyId,
        sshPolicy: request.body.ssh_policy,
      });
      const abort = new AbortController();
      request.raw.once('close', () => abort.abort());
      const deadline = Date.now() + request.body.wait_ms;
      while (run.state === 'running' && Date.now() < deadline && !abort.signal.aborted) {
        await run.waitForNews(Number.MAX_SAFE_INTEGER, deadline - Date.now(), abort.signal);
      }
      if (run.state === 'failed') throw failure(run);
      if (run.state === 'succeeded' && run.answer) return run.answer;
      return reply.code(202).send({ status: 'running', instance_id: run.instanceId, command_id: run.commandId });
    },
  );

  app.get(
    '/api/commands/:id',
    {
      config: { scope: 'instances:read', action: 'commands.get' },
      schema: {
        summary: 'A command sent to an agent: state, progress (long-poll with wait_ms), result',
        params: IdParams,
        querystring: CommandQuery,
        response: { 200: CommandView },
      },
    },
    async (request) => {
      const auth = authOf(request);
      const { id } = request.params;
      const row = await getCommand(ctx.db, id);
      if (!row || row.workspaceId !== auth.workspaceId) {
        throw new ApiError('command_not_found', `No command with id ${id} found in this workspace.`);
      }
      const run = ctx.harden?.runs.get(id, ctx.now());
      if (run) {
        const abort = new AbortController();
        request.raw.once('close', () => abort.abort());
        await run.waitForNews(request.query.after_seq, request.query.wait_ms, abort.signal);
        return {
          id,
          instance_id: row.instanceId,
          type: row.type,
          state: run.state,
          progress: run.progress
            .filter((p) => p.seq > request.query.after_seq)
            .map((p) => ({ seq: p.seq, step: p.step, state: p.state, ...(p.message === undefined ? {} : { message: p.message }) })),
          result: run.answer ?? null,
          error: run.error ?? null,
        };
      }
      // Another process ran it, or this one restarted: what the database holds, with
      // harden_vm's own answer (verification included) once its follow-up is done.
      // Written from a schema-checked result message, so its key is a registered one.
      const stored = row.result as Pick<StoredResult, 'output' | 'error'> | null;
      const followUp = row.type === 'harden' ? await getHardenFollowUp(ctx.db, id) : undefined;
      const answer = followUp?.state === 'done' ? followUp.answer : null;
      const answerError = answer !== null && isErrorKey(answer.error) && typeof answer.message === 'string' ? { ...answer, error: answer.error, message: answer.message } : null;
      return {
        id,
        instance_id: row.instanceId,
        type: row.type,
        state: row.state,
        progress: [],
        result: answer !== null && !answerError ? answer : (stored?.output ?? null),
        error: answerError ?? (stored?.error ? { error: stored.error.key, message: stored.error.message } : null),
      };
    },
  );
};
