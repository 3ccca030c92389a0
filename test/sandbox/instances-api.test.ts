import t from 'tap';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { LocalSandboxProvider } from '../../control-plane/src/providers/compute/local.ts';
import { computeProviderOf } from '../../control-plane/src/services/instances.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { sandboxSkipReason, sshBanner } from '../helpers/sandbox.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { waitAgentState } from '../helpers/real-agent.ts';
import { makeTestCa, opensslMissing } from '../helpers/test-ca.ts';
import { startTlsFront } from '../helpers/tls-front.ts';

const needsSandbox = { skip: prerequisite(sandboxSkipReason) };

interface InstanceBody {
  id: string;
  status: string;
  provider: string;
  ssh: { host: string; port: number } | null;
  agent: { state: string } | null;
}

t.test('POST /api/instances with provider local provisions a sandbox that turns running when its agent connects; DELETE destroys it', needsSandbox, async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(async () => {
    const local = computeProviderOf(cp.ctx, 'local');
    if (local instanceof LocalSandboxProvider) {
      for (const s of await local.list()) await local.destroy(s.ref).catch(() => undefined);
    }
    await cp.close();
  });

  const created = await cp.api<InstanceBody>('POST', '/api/instances', { body: { name: 'web-1', provider: 'local' } });
  t.equal(created.status, 201, JSON.stringify(created.body));
  t.equal(created.body.provider, 'local');
  t.match(created.body.status, /^(provisioning|running)$/);
  t.match(created.body.ssh?.host, /^10\.201\.\d+\.\d+$/, 'the sandbox address is the SSH address');
  t.equal(created.body.ssh?.port, 22);
  t.match(await sshBanner(created.body.ssh?.host ?? '', 22), /^SSH-2\.0-OpenSSH_/);

  let got = created.body;
  for (let i = 0; i < 120 && got.status !== 'running'; i++) {
    await new Promise((r) => setTimeout(r, 250));
    got = (await cp.api<InstanceBody>('GET', `/api/instances/${created.body.id}`)).body;
  }
  t.equal(got.status, 'running', 'running once the agent connected');
  t.equal(got.agent?.state, 'connected');

  const dir = join(cp.dataDir, 'sandboxes', created.body.id);
  t.ok(existsSync(dir), 'the sandbox lives under <dataDir>/sandboxes');
  const deleted = await cp.api<InstanceBody>('DELETE', `/api/instances/${created.body.id}`);
  t.equal(deleted.status, 200, JSON.stringify(deleted.body));
  t.equal(deleted.body.status, 'destroyed');
  t.equal(deleted.body.ssh, null);
  t.notOk(existsSync(dir), 'the sandbox folder is gone');
  await t.rejects(sshBanner(created.body.ssh?.host ?? '', 22, 1000), 'nothing answers on its address');
  const again = await cp.api<InstanceBody>('DELETE', `/api/instances/${created.body.id}`);
  t.equal(again.status, 200, 'deleting twice is fine');
});

t.test('an unknown provider is refused and a missing instance is not found', needsSandbox, async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const bad = await cp.api<{ error: string }>('POST', '/api/instances', { body: { name: 'x', provider: 'nimbus' } });
  t.equal(bad.status, 409);
  t.equal(bad.body.error, 'compute_target_missing');
  const missing = await cp.api<{ error: string }>('DELETE', '/api/instances/inst_01jx0000000000000000000000');
  t.equal(missing.status, 404);
  t.equal(missing.body.error, 'instance_not_found');
  const manual = await cp.api<InstanceBody>('POST', '/api/instances', { body: { name: 'by-hand' } });
  t.equal(manual.body.provider, 'manual');
  const del = await cp.api<InstanceBody>('DELETE', `/api/instances/${manual.body.id}`);
  t.equal(del.status, 200);
  t.equal(del.body.status, 'destroyed', 'a manual instance is only marked destroyed');
});

t.test('with --agent-url and --agent-ca-file, a local sandbox\'s agent enrolls with every URL and trusts the CA', { skip: prerequisite(sandboxSkipReason) || prerequisite(await opensslMissing()) }, async (t) => {
  const caDir = mkdtempSync(join(tmpdir(), 'vmkit-local-ca-'));
  t.teardown(() => rmSync(caDir, { recursive: true, force: true }));
  const ca = await makeTestCa(caDir);
  let cpUrl = '';
  const front = await startTlsFront(t, ca, () => cpUrl);
  const pem = readFileSync(ca.caFile, 'utf8');
  const cp = await startTestControlPlane({ config: { publicUrl: front.url, agentUrls: [front.url, 'https://127.0.0.1:9'], agentCa: { file: ca.caFile, pem } } });
  cpUrl = cp.url;
  const local = (): LocalSandboxProvider | undefined => {
    const p = computeProviderOf(cp.ctx, 'local');
    return p instanceof LocalSandboxProvider ? p : undefined;
  };
  t.teardown(async () => {
    for (const s of (await local()?.list()) ?? []) await local()?.destroy(s.ref).catch(() => undefined);
    await cp.close();
  });
  const created = await cp.api<InstanceBody>('POST', '/api/instances', { body: { name: 'behind-ca', provider: 'local' } });
  t.equal(created.status, 201, JSON.stringify(created.body));
  await waitAgentState(cp, created.body.id, 'connected', 60_000);
  const provider = local();
  if (provider === undefined) throw new Error('no local provider');
  const config = JSON.parse((await provider.exec(created.body.id, ['cat', '/etc/vmkit/agent.json'])).stdout) as { ca_file?: string; connect_url: string; connect_urls?: string[] };
  t.equal(config.connect_url, `wss://127.0.0.1:${front.port}/agent/v1/connect`, 'connected on wss:// through the TLS front');
  t.same(config.connect_urls, ['wss://127.0.0.1:9/agent/v1/connect'], 'the second agent URL kept');
  t.equal(config.ca_file, join(cp.dataDir, 'sandboxes', created.body.id, 'ca.pem'), "the provider's copy in the sandbox folder");
  t.equal(readFileSync(config.ca_file ?? '', 'utf8'), pem, 'the configured CA');
});
