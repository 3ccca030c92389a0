/**
 * How long a local VM sandbox takes to create (until sshd answers) and to destroy:
 *   node --import tsx scripts/sandbox/timing.ts [RUNS]   (root; default 5 runs)
 * Prints the median and the spread; never an assertion.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalSandboxProvider } from '../../control-plane/src/providers/compute/local.ts';

const runs = Number(process.argv[2] ?? 5);
const baseDir = mkdtempSync(join(tmpdir(), 'vmk-timing-'));
const provider = new LocalSandboxProvider({ baseDir });
const create: number[] = [];
const destroy: number[] = [];
try {
  for (let i = 0; i < runs; i++) {
    let t0 = performance.now();
    const vm = await provider.create({ instance_id: `timing-${i}`, name: `timing-${i}` });
    create.push(performance.now() - t0);
    t0 = performance.now();
    await provider.destroy(vm.ref);
    destroy.push(performance.now() - t0);
  }
} finally {
  for (const s of await provider.list()) await provider.destroy(s.ref);
  rmSync(baseDir, { recursive: true, force: true });
}
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN;
const fmt = (xs: number[]): string =>
  `p50 ${median(xs).toFixed(0)} ms (min ${Math.min(...xs).toFixed(0)}, max ${Math.max(...xs).toFixed(0)}, n=${xs.length})`;
console.log(`sandbox create (until sshd answers): ${fmt(create)}`);
console.log(`sandbox destroy:                     ${fmt(destroy)}`);
