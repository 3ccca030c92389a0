/**
 * A VM as a cloud would hand it over, on a test control plane: a local sandbox with
 * sshd allowing root and passwords, its vmkit-agent enrolled and connected, and the
 * instance's SSH address on record. Destroyed at teardown.
 *
 *   const { id, sb } = await startEnrolledVm(t, cp, { name: 'web-1', rootPassword: 'pw' });
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { updateInstance } from '../../control-plane/src/db/instances.ts';
import type { TestControlPlane } from './control-plane.ts';
import { startSandbox } from './sandbox.ts';
import type { TestSandbox } from './sandbox.ts';
import type { LocalSandboxProvider } from '../../control-plane/src/providers/compute/local.ts';

export interface EnrolledVm {
  id: string;
  sb: TestSandbox;
}

export async function startEnrolledVm(
  t: { teardown(fn: () => unknown): void },
  cp: TestControlPlane,
  opts: { name: string; rootPassword: string; connectTimeoutMs?: number; provider?: LocalSandboxProvider },
): Promise<EnrolledVm> {
  const inst = await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: opts.name } });
  const tok = await cp.api<{ token: string }>('POST', `/api/instances/${inst.body.id}/enrollment-token`);
  const sb = await startSandbox(t, {
    instanceId: inst.body.id,
    name: opts.name,
    rootPassword: opts.rootPassword,
    enrollment: { control_plane_url: cp.url, token: tok.body.token },
    ...(opts.provider === undefined ? {} : { provider: opts.provider }),
  });
  await updateInstance(cp.ctx.db, inst.body.id, { sshHost: sb.vm.address, sshPort: 22, status: 'running' });
  const deadline = Date.now() + (opts.connectTimeoutMs ?? 90_000);
  while (Date.now() < deadline) {
    const got = await cp.api<{ agent: { state: string } | null }>('GET', `/api/instances/${inst.body.id}`);
    if (got.body.agent?.state === 'connected') return { id: inst.body.id, sb };
    await new Promise((r) => setTimeout(r, 250));
  }
  const program = join(sb.vm.dir, 'program.log');
  throw new Error(`the agent of ${opts.name} did not connect\n${existsSync(program) ? readFileSync(program, 'utf8').slice(-3000) : ''}`);
}
