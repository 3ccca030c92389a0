/**
 * A data dir, a port and the local provider for tests that SIGKILL the control plane and
 * start it again on the same data dir and port. Teardown kills whichever process is current
 * and destroys every sandbox the provider still lists.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { localProviderFor } from '../../control-plane/src/providers/compute/local.ts';
import { freePort, startControlPlaneProcess } from './cp-process.ts';
import type { ControlPlaneProcess } from './cp-process.ts';

export interface CrashRig {
  dataDir: string;
  provider: ReturnType<typeof localProviderFor>;
  /** Starts the control plane (again) on the rig's data dir and port. */
  start: () => Promise<ControlPlaneProcess>;
}

/** `env` is passed to every start (provider settings, wait bounds). */
export async function crashRig(t: { teardown(fn: () => unknown): void }, env: NodeJS.ProcessEnv = {}): Promise<CrashRig> {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmkit-cp-crash-'));
  const provider = localProviderFor(dataDir);
  let current: ControlPlaneProcess | undefined;
  t.teardown(async () => {
    current?.kill('SIGKILL');
    await current?.exited;
    for (const s of await provider.list()) await provider.destroy(s.ref).catch(() => undefined);
    rmSync(dataDir, { recursive: true, force: true });
  });
  const port = await freePort();
  return { dataDir, provider, start: async () => (current = await startControlPlaneProcess({ dataDir, port, env })) };
}
