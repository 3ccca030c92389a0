import t from 'tap';
import type { Test } from 'tap';
import { HetznerComputeProvider, serverName } from '../../control-plane/src/providers/compute/hetzner.ts';
import type { HetznerProviderOptions } from '../../control-plane/src/providers/compute/hetzner.ts';
import { ENROLL_ENV_FILE } from '../../control-plane/src/providers/compute/cloud-init.ts';
import type { AgentEnrollment, CreateVmSpec } from '../../control-plane/src/providers/compute/types.ts';
import { FakeHetzner } from '../helpers/fake-hetzner.ts';

const TOKEN = 'hcloud_test_token_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMN';

async function setup(t: Test, opts: Partial<HetznerProviderOptions> = {}): Promise<{ fake: FakeHetzner; provider: HetznerComputeProvider }> {
  const fake = await FakeHetzner.start({ token: TOKEN });
  t.teardown(() => fake.close());
  const provider = new HetznerComputeProvider({ token: TOKEN, baseUrl: fake.url, pollIntervalMs: 10, ...opts });
  return { fake, provider };
}

function spec(instanceId = 'inst_01jx4n9abcdefghjkmnpqrstvw', extra: Partial<CreateVmSpec> = {}): CreateVmSpec {
  return {
    instance_id: instanceId,
    name: 'Shop Staging',
    bootstrap: {
      agent: {
        control_plane_url: 'https://cp.example.com',
        token: 'vmkenr_0123456789abcdefghijklmnopqrstuv',
        control_plane_keys: ['k1:MCowBQYDK2VwAyEAq83vEyT8Zf0xD3p0ZVyT4c9lTgoS2xXbXh4tkYw6PJk=', 'k0:old'],
      },
    },
    labels: { environment: 'staging', deploy: 'dep_01jx4n9abcdefghjkmnpqrstvw' },
    ...extra,
  };
}

const posts = (fake: FakeHetzner): number => fake.requests.filter((r) => r.method === 'POST' && r.path === '/v1/servers').length;

t.test('creating a VM makes one labelled server with cloud-init and waits for it to run', async (t) => {
  const { fake, provider } = await setup(t);
  const vm = await provider.create(spec());
  const [server, ...more] = fake.servers();
  t.equal(more.length, 0, 'exactly one server');
  if (!server) return;
  t.equal(vm.ref, 'inst_01jx4n9abcdefghjkmnpqrstvw', 'the ref is the instance id, known before creating');
  t.equal(provider.refFor('inst_01jx4n9abcdefghjkmnpqrstvw'), vm.ref);
  t.equal(vm.address, server.public_net.ipv4?.ip);
  t.equal(vm.ssh_port, 22);
  t.type(vm.root_password, 'string', "Hetzner's root password is handed on when no SSH key was given");
  t.equal(server.status, 'running');
  t.match(server.name, /^shop-staging-[a-z0-9]{8}$/);
  t.same(
    { type: server.server_type.name, image: server.image.name, location: server.datacenter.location.name },
    { type: 'cx22', image: 'ubuntu-24.04', location: 'fsn1' },
  );
  t.same(server.labels, {
    'managed-by': 'vmkit',
    'vmkit-instance': 'inst_01jx4n9abcdefghjkmnpqrstvw',
    'vmkit-environment': 'staging',
    'vmkit-deploy': 'dep_01jx4n9abcdefghjkmnpqrstvw',
  });
  const actionReads = fake.requests.filter((r) => r.method === 'GET' && r.path.startsWith('/v1/actions/'));
  t.ok(actionReads.length >= 2, 'the create and start actions were polled to success');
});

t.test('the user_data installs Docker and the agent and enrolls it with the one-time token', async (t) => {
  const { fake, provider } = await setup(t);
  await provider.create(spec());
  const userData = fake.servers()[0]?.user_data ?? '';
  t.match(userData, /^#cloud-config\n/);
  const config = JSON.parse(userData.slice('#cloud-config\n'.length)) as {
    packages: string[];
    write_files: { path: string; permissions: string; content: string }[];
    runcmd: string[][];
  };
  t.ok(config.packages.includes('docker.io'), 'Docker from the distribution');
  const env = config.write_files.find((f) => f.path === ENROLL_ENV_FILE);
  t.equal(env?.permissions, '0600');
  t.match(env?.content ?? '', "VMKIT_ENROLLMENT_TOKEN='vmkenr_0123456789abcdefghijklmnopqrstuv'");
  t.match(env?.content ?? '', "VMKIT_CONTROL_PLANE_URL='https://cp.example.com'");
  t.match(env?.content ?? '', "VMKIT_CP_KEY='k1:", 'the active signing key is pinned');
  const install = config.runcmd.map((c) => c.join(' ')).join('\n');
  t.match(install, /install\.sh/);
  t.match(install, new RegExp(`rm -f ${ENROLL_ENV_FILE}`), 'the token file is removed after the install step');
  t.notMatch(install, /vmkenr_/, 'the token is not in the command lines');
});

t.test('creating the same instance again reuses its server', async (t) => {
  const { fake, provider } = await setup(t);
  const first = await provider.create(spec());
  const again = await provider.create(spec());
  t.equal(fake.servers().length, 1);
  t.equal(posts(fake), 1, 'no second POST /servers');
  t.equal(again.address, first.address);
});

t.test('two creates of one instance at the same time make one server', async (t) => {
  const { fake, provider } = await setup(t);
  const [a, b] = await Promise.all([provider.create(spec()), provider.create(spec())]);
  t.equal(fake.servers().length, 1);
  t.equal(a.address, b.address);
});

t.test('a create cut short (server made, caller gone) is finished by the next create', async (t) => {
  const { fake, provider } = await setup(t, { actionTimeoutMs: 60_000 });
  // A first provider posts and is abandoned before polling (a crashed control plane).
  const crashed = new HetznerComputeProvider({ token: TOKEN, baseUrl: fake.url, actionTimeoutMs: 0 });
  await t.rejects(crashed.create(spec()), { name: 'ComputeError', key: 'provision_failed' });
  t.equal(fake.servers()[0]?.status, 'initializing');
  const vm = await provider.create(spec());
  t.equal(fake.servers().length, 1);
  t.equal(posts(fake), 1);
  t.equal(vm.address, fake.servers()[0]?.public_net.ipv4?.ip);
});

t.test('destroy deletes the server; destroying again, or a VM never made, succeeds', async (t) => {
  const { fake, provider } = await setup(t);
  const vm = await provider.create(spec());
  t.equal(await provider.status(vm.ref), 'running');
  await provider.destroy(vm.ref);
  t.equal(fake.servers().length, 0);
  t.equal(await provider.status(vm.ref), 'missing');
  await provider.destroy(vm.ref);
  await provider.destroy('inst_01jx4n9zzzzzzzzzzzzzzzzzzz');
  t.equal(fake.requests.filter((r) => r.method === 'DELETE').length, 1, 'only the existing server was deleted');
});

t.test('destroy leaves servers VMKit did not make alone', async (t) => {
  const { fake, provider } = await setup(t);
  fake.addForeignServer('hand-made', { 'vmkit-instance': 'inst_01jx4n9abcdefghjkmnpqrstvw' });
  const vm = await provider.create(spec());
  await provider.destroy(vm.ref);
  t.same(fake.servers().map((s) => s.name), ['hand-made']);
});

t.test('a failed create action is a provision_failed error with Hetzner code', async (t) => {
  const { fake, provider } = await setup(t);
  fake.failNextCreate = { code: 'placement_error', message: 'no capacity in fsn1' };
  await t.rejects(provider.create(spec()), { name: 'ComputeError', key: 'provision_failed', message: /placement_error: no capacity in fsn1/ });
});

t.test('a wrong API token says to check the token', async (t) => {
  const { fake } = await setup(t);
  const provider = new HetznerComputeProvider({ token: 'wrong', baseUrl: fake.url, pollIntervalMs: 10 });
  await t.rejects(provider.create(spec()), { key: 'provider_auth_failed', message: /unauthorized.*Check the Hetzner API token/ });
});

t.test('an unknown server type is refused with the field Hetzner names', async (t) => {
  const { fake, provider } = await setup(t, { serverType: 'cx9000' });
  await t.rejects(provider.create(spec()), { key: 'provision_failed', message: /invalid_input: invalid input in field 'server_type'/ });
  t.equal(fake.servers().length, 0);
});

t.test('a server name taken by a server VMKit did not make is a clear error', async (t) => {
  const { fake, provider } = await setup(t);
  fake.addForeignServer(serverName('Shop Staging', 'inst_01jx4n9abcdefghjkmnpqrstvw'));
  await t.rejects(provider.create(spec()), { key: 'provision_failed', message: /uniqueness_error.*did not make.*rename or delete it/ });
  t.equal(fake.servers().length, 1);
});

t.test('a label value Hetzner would refuse is refused before any request', async (t) => {
  const { fake, provider } = await setup(t);
  await t.rejects(provider.create(spec(undefined, { labels: { environment: 'staging/eu' } })), { key: 'invalid_request', message: /not a valid Hetzner label/ });
  t.equal(fake.requests.length, 0);
});

t.test('a 429 is retried once RateLimit-Reset has passed', async (t) => {
  const { fake, provider } = await setup(t);
  const resetAt = Math.floor(Date.now() / 1000) + 2;
  fake.throttledUntil = resetAt;
  const vm = await provider.create(spec());
  t.ok(vm.address);
  const [first, second] = fake.requests;
  t.equal(first?.status, 429, 'the first request was throttled');
  t.ok((second?.atMs ?? 0) >= resetAt * 1000, 'the retry came no earlier than the advertised reset');
  t.equal(fake.requests.filter((r) => r.status === 429).length, 1, 'one 429, then the retry went through');
});

t.test('a rate limit that outlasts the retries gives up with the reset time', async (t) => {
  const waits: number[] = [];
  const { fake, provider } = await setup(t, { maxRetries: 2, maxWaitMs: 2 * 3600_000, sleep: async (ms) => void waits.push(ms) });
  const resetAt = Math.floor(Date.now() / 1000) + 1800;
  fake.throttledUntil = resetAt;
  await t.rejects(provider.create(spec()), { key: 'provider_rate_limited', message: new RegExp(new Date(resetAt * 1000).toISOString()) });
  t.equal(fake.requests.length, 3, 'the first request and two retries');
  t.equal(waits.length, 2);
  t.ok(waits.every((ms) => ms > 1700_000), 'each wait ran to the advertised reset');
});

t.test('a reset further away than the longest wait is handed back at once', async (t) => {
  const { fake, provider } = await setup(t, { maxWaitMs: 1000 });
  fake.throttledUntil = Math.floor(Date.now() / 1000) + 600;
  await t.rejects(provider.create(spec()), { key: 'provider_rate_limited', message: /3,600 requests an hour/ });
  t.equal(fake.requests.length, 1);
});

t.test('an unreachable API is provider_unavailable', async (t) => {
  const fake = await FakeHetzner.start({ token: TOKEN });
  const url = fake.url;
  await fake.close();
  const provider = new HetznerComputeProvider({ token: TOKEN, baseUrl: url, timeoutMs: 5000 });
  await t.rejects(provider.status('inst_01jx4n9abcdefghjkmnpqrstvw'), { key: 'provider_unavailable', message: /could not be reached/ });
});

t.test('enrollment values that could break out of the cloud-init env file are refused', async (t) => {
  const { fake, provider } = await setup(t);
  const agent = { control_plane_url: 'https://cp.example.com', token: 'vmkenr_ok' };
  const cases: [string, AgentEnrollment][] = [
    ['a quote in the URL', { ...agent, control_plane_url: "https://cp.example.com/'$(reboot)'" }],
    ['a newline in the token', { ...agent, token: 'vmkenr_a\nVMKIT_X=1' }],
    ['a malformed signing key', { ...agent, control_plane_keys: ["k1:abc' ; reboot"] }],
  ];
  for (const [what, bad] of cases) {
    await t.rejects(provider.create(spec(undefined, { bootstrap: { agent: bad } })), { name: 'ComputeError', key: 'invalid_request' }, what);
  }
  t.equal(posts(fake), 0, 'no server was asked for');
});
