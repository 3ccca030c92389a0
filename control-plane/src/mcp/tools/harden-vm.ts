import { z } from 'zod';
import { defineTool, errorResult, expectOk, okResult, seg, untilAborted } from '../tool.ts';
import type { ToolContext } from '../tool.ts';

/** Longest single long-poll of a command's progress. */
const POLL_SLICE_MS = 10_000;

const progressEntry = z.looseObject({ seq: z.number(), step: z.string(), state: z.string(), message: z.string().optional() });
const commandView = z.looseObject({
  id: z.string(),
  state: z.string(),
  progress: z.array(progressEntry).optional(),
  result: z.record(z.string(), z.unknown()).nullable().optional(),
  error: z.looseObject({ error: z.string(), message: z.string() }).nullable().optional(),
});

const TERMINAL = new Set(['succeeded', 'failed', 'expired', 'timed_out']);

/** The REST answer (status first, as the agent reports it) with the contract's instance_id echoed. */
function answer(instanceId: string, body: Record<string, unknown>) {
  return okResult({ ...body, instance_id: instanceId });
}

async function follow(instanceId: string, commandId: string, ctx: ToolContext, started: number) {
  let afterSeq = -1;
  let reported = 0;
  for (;;) {
    const remaining = ctx.maxWaitMs - (Date.now() - started);
    if (remaining <= 0 || ctx.signal.aborted) {
      return okResult({
        status: 'running',
        instance_id: instanceId,
        command_id: commandId,
        message: `Hardening is still running. Poll GET /api/commands/${commandId} (or call harden_vm again later: it answers already_hardened once done).`,
      });
    }
    const wait = Math.min(POLL_SLICE_MS, remaining);
    const res = await untilAborted(
      ctx.call({ method: 'GET', path: `/api/commands/${seg(commandId)}?after_seq=${afterSeq}&wait_ms=${wait}` }),
      ctx.signal,
    );
    // Cancelled: stop at once and send nothing more. The harden itself runs to its end on
    // the agent (it is all-or-nothing there), and harden_vm again reports its outcome.
    if (res === undefined) return okResult({ status: 'running', instance_id: instanceId, command_id: commandId, message: 'Cancelled by the client while hardening was running.' });
    const view = commandView.parse(expectOk(res));
    for (const p of view.progress ?? []) {
      if (p.seq <= afterSeq) continue;
      afterSeq = p.seq;
      reported += 1;
      await ctx.progress(reported, `${p.step}: ${p.state}${p.message ? ` — ${p.message}` : ''}`);
    }
    if (TERMINAL.has(view.state)) {
      if (view.state === 'succeeded' && view.result) return answer(instanceId, { command_id: commandId, ...view.result });
      const err = view.error ?? { error: 'command_failed', message: `The harden command ended ${view.state}.` };
      return errorResult({ status: 409, body: err, headers: {} });
    }
  }
}

export const hardenVm = defineTool({
  name: 'harden_vm',
  title: 'Harden a VM',
  description:
    'Runs security hardening on a provisioned VM whose vmkit-agent is connected: creates the kamal OS user, grants it ' +
    'Docker socket access through the docker group, installs the deploy key, and tightens SSH (no root login, no ' +
    'password or keyboard-interactive auth), refusing if that would lock everyone out. Returns status "hardened" when ' +
    'it changed something or "already_hardened" when the VM was already in that state, plus per-step detail and an ' +
    'outside check over SSH. Normally deploy calls this for you; call it directly to recover a VM that was provisioned ' +
    'but never hardened. Find instance ids with list_instances. Sends progress notifications per step; if it runs past ' +
    'the wait bound it answers status "running" with a command_id to poll.',
  inputSchema: z.object({
    instance_id: z.string().min(1).max(64).describe('The instance id of a provisioned VM, e.g. inst_01jx4n9abc...'),
    ssh_policy: z
      .boolean()
      .optional()
      .describe(
        'Optional, default true: also enforce the SSH policy (modern key exchange, ciphers, MACs and host keys; X11 and agent ' +
          'forwarding off; MaxAuthTries 3; LoginGraceTime 30; TCP forwarding stays for Kamal). false leaves those settings as they are.',
      ),
  }),
  outputSchema: z.looseObject({
    status: z.enum(['hardened', 'already_hardened', 'running']),
    instance_id: z.string(),
  }),
  // Destructive: it takes away root login and password authentication, not only adds.
  annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: true },
  async run(args, ctx) {
    const started = Date.now();
    const res = await ctx.call({
      method: 'POST',
      path: `/api/instances/${seg(args.instance_id)}/harden`,
      body: { wait_ms: 0, ...(args.ssh_policy === undefined ? {} : { ssh_policy: args.ssh_policy }) },
    });
    const body = expectOk(res);
    if (res.status === 200) return answer(args.instance_id, body);
    const commandId = typeof body.command_id === 'string' ? body.command_id : '';
    await ctx.progress(0, 'harden command sent to the agent');
    return follow(args.instance_id, commandId, ctx, started);
  },
});
