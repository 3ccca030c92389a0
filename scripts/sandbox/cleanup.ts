/**
 * Removes local VM sandboxes left behind by a crash: stopped ones by default, also
 * running ones whose creating process is gone with --orphaned, all with --all:
 *   node --import tsx scripts/sandbox/cleanup.ts [--orphaned|--all] [BASE_DIR ...]   (default ./data/sandboxes)
 * e.g. after a killed test run: cleanup.ts --orphaned /tmp/vmk-sbx-*
 * Only sandboxes with a folder under the given base dirs are touched; a base dir left
 * empty under the system temp dir is removed too.
 */
import { readdirSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { parseArgs } from 'node:util';
import { LocalSandboxProvider } from '../../control-plane/src/providers/compute/local.ts';

const { values, positionals } = parseArgs({ options: { all: { type: 'boolean' }, orphaned: { type: 'boolean' } }, allowPositionals: true });
for (const baseDir of positionals.length > 0 ? positionals : ['data/sandboxes']) {
  const provider = new LocalSandboxProvider({ baseDir });
  if (values.all === true || values.orphaned === true) {
    for (const s of await provider.list()) {
      if (values.all !== true && s.status === 'running' && !provider.ownerGone(s.ref)) continue;
      await provider.destroy(s.ref);
      console.log(`destroyed ${s.ref} (${s.status})`);
    }
  } else {
    const stale = await provider.destroyStale();
    console.log(stale.length === 0 ? `no stale sandboxes under ${provider.baseDir}` : `destroyed ${stale.join(', ')}`);
  }
  try {
    if (provider.baseDir.startsWith(`${tmpdir()}/`) && readdirSync(provider.baseDir).length === 0) rmdirSync(provider.baseDir);
  } catch {
    // already gone
  }
}
