import t from 'tap';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { FakeHetzner } from '../helpers/fake-hetzner.ts';
import type { ComputeProvider, CreateVmSpec, CreatedVm } from '../../control-plane/src/providers/compute/types.ts';
import { rawRows, sql } from '../../control-plane/src/db/raw.ts';

const TOKEN = 'hcloud_test_token_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMN';
const MINUTE = 60_000;

const cp = await startTestControlPlane();
t.teardown(() => cp.close());
const hetzner = await FakeHetzner.start({ token: TOKEN, actionMs: 20 });
t.teardown(() => hetzner.close());

/** How long the instance's enrollment token was issued for. */
async function tokenLifetimeMs(instanceId: string): Promise<number> {
  const [row] = await rawRows<{ ms: number }>(cp.ctx.db, sql`select expires_at - created_at as ms from enrollment_tokens where instance_id = ${instanceId}`);
  return Number(row?.ms);
}

t.test("a VM from the workspace's Hetzner project gets a 30-minute enrollment token (Hetzner keeps user_data)", async (t) => {
  t.equal((await cp.api('PUT', '/api/workspace/compute', { body: { provider: 'hetzner', token: TOKEN, api_url: hetzner.url, location: 'nbg1' } })).status, 200);
  const res = await cp.api<{ id: string; status: string; provider: string }>('POST', '/api/instances', { body: { name: 'shop-staging', provider: 'hetzner' } });
  t.equal(res.status, 201, JSON.stringify(res.body));
  t.match(res.body, { status: 'provisioning', provider: 'hetzner' });
  t.equal(await tokenLifetimeMs(res.body.id), 30 * MINUTE);
  const [server] = hetzner.servers();
  t.equal(server?.labels['vmkit-instance'], res.body.id, "made in the workspace's project, with the workspace's settings");
  t.equal(server?.datacenter.location.name, 'nbg1');
  t.match(server?.user_data, /vmkenr_/, 'the token travels in user_data, which is why it is short-lived');

  const gone = await cp.api<{ status: string }>('DELETE', `/api/instances/${res.body.id}`);
  t.equal(gone.status, 200);
  t.equal(gone.body.status, 'destroyed');
  t.same(hetzner.servers(), [], "removed through the workspace's Hetzner client");
});

t.test('a workspace without Hetzner settings cannot provision there', async (t) => {
  const other = await cp.createWorkspace('second');
  const res = await cp.api<{ error: string }>('POST', '/api/instances', { key: other.adminKey, body: { name: 'x', provider: 'hetzner' } });
  t.equal(res.status, 409);
  t.equal(res.body.error, 'compute_target_missing');
});

t.test('a provider that keeps nothing readable gets the hub’s 60-minute token', async (t) => {
  const made: CreateVmSpec[] = [];
  const plain: ComputeProvider = {
    name: 'plain',
    create: (spec): Promise<CreatedVm> => {
      made.push(spec);
      return Promise.resolve({ ref: spec.instance_id, address: '192.0.2.10', ssh_port: 22 });
    },
    status: () => Promise.resolve('running'),
    destroy: () => Promise.resolve(),
  };
  const short: ComputeProvider = { ...plain, name: 'short', enrollmentTokenTtlMs: 5 * MINUTE };
  cp.ctx.computeProviders = { plain, short };
  const a = await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: 'a', provider: 'plain' } });
  t.equal(a.status, 201);
  t.equal(await tokenLifetimeMs(a.body.id), 60 * MINUTE);
  const b = await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: 'b', provider: 'short' } });
  t.equal(await tokenLifetimeMs(b.body.id), 5 * MINUTE, "the provider's limit wins when it is shorter");
  t.equal(made.length, 2);
});

t.test('a control plane with --agent-url and --agent-ca-file sends both in the Hetzner user_data', async (t) => {
  const pem = '-----BEGIN CERTIFICATE-----\nMIIBfzCCASWgAwIBAgIUTestOnlyFleetCa\n-----END CERTIFICATE-----\n';
  const fleet = await startTestControlPlane({
    config: { agentUrls: ['https://cp-a.example.com', 'https://cp-b.example.com', 'https://cp-c.example.com:8443'], agentCa: { file: '/etc/vmkit-cp/fleet-ca.pem', pem } },
  });
  t.teardown(() => fleet.close());
  const fake = await FakeHetzner.start({ token: TOKEN, actionMs: 20 });
  t.teardown(() => fake.close());
  t.equal((await fleet.api('PUT', '/api/workspace/compute', { body: { provider: 'hetzner', token: TOKEN, api_url: fake.url } })).status, 200);
  const res = await fleet.api<{ id: string }>('POST', '/api/instances', { body: { name: 'behind-the-lb', provider: 'hetzner' } });
  t.equal(res.status, 201, JSON.stringify(res.body));
  const userData = fake.servers()[0]?.user_data ?? '';
  const config = JSON.parse(userData.replace(/^#cloud-config\n/, '')) as { write_files: { path: string; permissions: string; owner: string; content: string }[]; runcmd: string[][] };
  t.same(config.write_files.find((f) => f.path === '/run/vmkit-ca.pem'), { path: '/run/vmkit-ca.pem', permissions: '0644', owner: 'root:root', content: pem }, 'the CA, exactly');
  const env = config.write_files.find((f) => f.path === '/etc/vmkit/enroll.env')?.content ?? '';
  t.match(env, "VMKIT_CONTROL_PLANE_URL='https://cp-a.example.com'\n", 'installed from the first agent URL, not the public URL');
  t.match(env, "VMKIT_CP_URLS='https://cp-b.example.com https://cp-c.example.com:8443'\n");
  t.match(env, "VMKIT_CA_FILE='/run/vmkit-ca.pem'\n");
  t.notMatch(userData, fleet.ctx.publicUrl, 'the public URL (the test listener) is not handed to the VM');
  t.match(config.runcmd.map((c) => c.join(' ')).join('\n'), '--cacert "$VMKIT_CA_FILE" "$VMKIT_CONTROL_PLANE_URL/install.sh"');

  // The same control plane's install command for a machine installed by hand.
  const tok = await fleet.api<{ install_command: string }>('POST', `/api/instances/${res.body.id}/enrollment-token`);
  t.match(
    tok.body.install_command,
    /^curl -fsSL --cacert ca\.pem https:\/\/cp-a\.example\.com\/install\.sh \| sudo VMKIT_CP_KEY=ed25519:[0-9a-f]{32}:\S+ VMKIT_CP_URLS="https:\/\/cp-b\.example\.com https:\/\/cp-c\.example\.com:8443" VMKIT_CA_FILE="\$PWD\/ca\.pem" bash -s -- https:\/\/cp-a\.example\.com vmkenr_\S+$/,
  );
});

t.test('a CA too big for Hetzner user_data fails the instance with the reason, and no server is made', async (t) => {
  const pem = `-----BEGIN CERTIFICATE-----\n${`${'A'.repeat(64)}\n`.repeat(600)}-----END CERTIFICATE-----\n`;
  const big = await startTestControlPlane({ config: { agentCa: { file: '/etc/vmkit-cp/huge.pem', pem } } });
  t.teardown(() => big.close());
  const fake = await FakeHetzner.start({ token: TOKEN, actionMs: 20 });
  t.teardown(() => fake.close());
  t.equal((await big.api('PUT', '/api/workspace/compute', { body: { provider: 'hetzner', token: TOKEN, api_url: fake.url } })).status, 200);
  const res = await big.api<{ error: string; message: string }>('POST', '/api/instances', { body: { name: 'too-big', provider: 'hetzner' } });
  t.equal(res.status, 502);
  t.equal(res.body.error, 'provision_failed');
  t.match(res.body.message, /more than the provider's 32768: the agent CA \(--agent-ca-file, \d+ bytes\) does not fit/);
  t.same(fake.servers(), [], 'nothing was asked of Hetzner');
  const list = await big.api<{ items: { name: string; status: string; status_reason: string }[] }>('GET', '/api/instances');
  t.match(list.body.items.find((i) => i.name === 'too-big'), { status: 'failed', status_reason: /agent CA/ });
});
