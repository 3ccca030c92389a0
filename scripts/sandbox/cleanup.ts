/**
 * Removes local VM sandboxes left behind by a crash (or all of them with --all):
 *   node --import tsx scripts/sandbox/cleanup.ts [--all] [BASE_DIR]   (default ./data/sandboxes)
 * Only sandboxes with a folder under BASE_DIR are touched.
 */
import { parseArgs } from 'node:util';
import { LocalSandboxProvider } from '../../control-plane/src/providers/compute/local.ts';

const { values, positionals } = parseArgs({ options: { all: { type: 'boolean' } }, allowPositionals: true });
const provider = new LocalSandboxProvider({ baseDir: positionals[0] ?? 'data/sandboxes' });
if (values.all === true) {
  for (const s of await provider.list()) {
    await provider.destroy(s.ref);
    console.log(`destroyed ${s.ref} (${s.status})`);
  }
} else {
  const stale = await provider.destroyStale();
  console.log(stale.length === 0 ? `no stale sandboxes under ${provider.baseDir}` : `destroyed ${stale.join(', ')}`);
}
