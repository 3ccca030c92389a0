import type { CommandType } from '@vmkit/protocol';
import { factsExecutor } from './facts.ts';
import { hardenExecutorSpec } from './harden/index.ts';
import type { HardenEnv } from './harden/index.ts';
import { keysRotateExecutor } from './keys-rotate.ts';
import { pingExecutor } from './ping.ts';
import type { ShellSessions } from './shell/sessions.ts';
import type { ExecutorSpec } from './types.ts';
import { agentUpdateExecutor } from '../update/executor.ts';
import type { UpdateEnv } from '../update/executor.ts';

export type { DeferredOutcome, Executor, ExecutorContext, ExecutorOutcome, ExecutorSpec, KeyRing, StepState } from './types.ts';

type SpecTable = { [T in CommandType]?: ExecutorSpec<T> };

/** Executors keyed by command type; a type with no executor is answered `unsupported_command`. */
export class ExecutorRegistry {
  readonly #specs: SpecTable = {};

  register<T extends CommandType>(type: T, spec: ExecutorSpec<T>): this {
    (this.#specs as Record<T, ExecutorSpec<T>>)[type] = spec;
    return this;
  }

  get<T extends CommandType>(type: T): ExecutorSpec<T> | undefined {
    return (this.#specs as Partial<Record<T, ExecutorSpec<T>>>)[type];
  }

  types(): CommandType[] {
    return Object.keys(this.#specs) as CommandType[];
  }
}

/**
 * The registration point. `shell.open` is served by the daemon's ShellSessions (it
 * needs the connection to move bytes); without one it is answered `unsupported_command`.
 */
export function defaultExecutors(opts: { harden?: HardenEnv; shell?: ShellSessions; update?: UpdateEnv } = {}): ExecutorRegistry {
  const registry = new ExecutorRegistry()
    .register('ping', pingExecutor)
    .register('facts', factsExecutor)
    .register('keys.rotate', keysRotateExecutor)
    .register('harden', hardenExecutorSpec(opts.harden));
  if (opts.update) registry.register('agent.update', agentUpdateExecutor(opts.update));
  return opts.shell ? registry.register('shell.open', opts.shell.executor) : registry;
}
