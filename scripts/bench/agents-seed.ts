import { createHash } from 'node:crypto';

/** Deterministic key seed of simulated agent i: the orchestrator and the workers derive the same keys. */
export function benchSeed(i: number): Buffer {
  return createHash('sha256').update(`vmkit-bench-agent-${i}`).digest();
}
