import { keyIdOf } from '@vmkit/protocol';
import type { ErrorKey } from '@vmkit/protocol';
import type { ExecutorSpec } from './types.ts';

/**
 * Adds then retires pinned control-plane keys. Agents learn a new key only through
 * this command, signed by a key they already trust. It never leaves the agent with
 * no key, and a key cannot retire itself unless it hands over to a new one in the
 * same command.
 */
export const keysRotateExecutor: ExecutorSpec<'keys.rotate'> = {
  exclusive: true,
  run: async (params, ctx) => {
    const refuse = (message: string) => ({ status: 'failed' as const, error: { key: 'key_rotation_refused' as const satisfies ErrorKey, message } });
    for (const k of params.add) {
      let derived: string;
      try {
        derived = keyIdOf(k.public_key);
      } catch {
        return refuse(`key ${k.key_id} is not a valid Ed25519 public key`);
      }
      if (derived !== k.key_id) return refuse(`key id ${k.key_id} does not match its public key`);
    }
    const current = ctx.keys.list();
    const known = new Set(current.map((k) => k.key_id));
    const added = params.add.filter((k) => !known.has(k.key_id));
    const retire = new Set(params.retire);

    if (added.some((k) => retire.has(k.key_id))) return refuse('a key cannot be added and retired in the same command');
    if (retire.has(ctx.command.key_id) && added.length === 0) {
      return refuse(`key ${ctx.command.key_id} signed this command and cannot retire itself without adding a new key`);
    }
    const next = [...current, ...added].filter((k) => !retire.has(k.key_id));
    if (next.length === 0) return refuse('the rotation would leave no pinned key');
    if (next.length > 8) return refuse(`at most 8 keys can be pinned (this rotation would pin ${next.length})`);

    ctx.progress('pin', 'started');
    await ctx.keys.replace(next);
    ctx.progress('pin', 'done');
    ctx.log.info('pinned control-plane keys changed', { added: added.map((k) => k.key_id), retired: current.filter((k) => retire.has(k.key_id)).map((k) => k.key_id) });
    return {
      status: 'succeeded',
      output: {
        pinned: next.map((k) => k.key_id),
        added: added.map((k) => k.key_id),
        retired: current.filter((k) => retire.has(k.key_id)).map((k) => k.key_id),
        not_pinned: params.retire.filter((id) => !known.has(id)),
      },
    };
  },
};
