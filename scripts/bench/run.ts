/**
 * `npm run bench`: runs every benchmark in turn, each as its own process, and prints
 * their figures. Names on the command line pick a subset: `npm run bench -- api mcp`.
 * A benchmark that needs root (sandbox VMs) says so and is skipped when not root.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

const BENCHES = ['api', 'mcp', 'agents', 'agent', 'harden', 'scan', 'deploy', 'shell'] as const;
const picked = process.argv.slice(2);
const names = picked.length > 0 ? picked : [...BENCHES];
let failed = 0;
for (const name of names) {
  const file = join(import.meta.dirname, `${name}.ts`);
  if (!existsSync(file)) {
    process.stdout.write(`\n== ${name}: no such benchmark (${BENCHES.join(', ')})\n`);
    failed++;
    continue;
  }
  process.stdout.write(`\n== ${name}\n`);
  const res = spawnSync(process.execPath, ['--import', 'tsx', file], { stdio: 'inherit', cwd: join(import.meta.dirname, '..', '..') });
  if (res.status !== 0) {
    process.stdout.write(`== ${name} exited with ${res.status ?? res.signal}\n`);
    failed++;
  }
}
process.exitCode = failed > 0 ? 1 : 0;
