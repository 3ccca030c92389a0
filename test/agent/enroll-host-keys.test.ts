// The VM's SSH host keys travel with enrollment (vmkit-agent enroll → POST
// /api/agents/enroll) and are shown on the instance, for deploys to pin in known_hosts.
import { generateKeyPairSync } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { encodePublicKey } from '@vmkit/protocol';
import { startTestControlPlane, uniqueInstanceName } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { wireFixtures } from '../helpers/fixtures.ts';
import { runCli } from './agent-process.ts';

const [ECDSA, ED25519] = (wireFixtures('valid', 'enroll_request').find((f) => f.name === 'enroll-request-ssh-host-keys.json')?.value.ssh_host_keys ?? []) as string[];
if (!ECDSA || !ED25519) throw new Error('the wire corpus lost its host key case');

interface InstanceBody {
  ssh_host_keys: string[];
  agent: { id: string } | null;
}

async function instanceWithToken(cp: TestControlPlane): Promise<{ id: string; token: string }> {
  const inst = (await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: uniqueInstanceName('host-keys') } })).body;
  const tok = (await cp.api<{ token: string }>('POST', `/api/instances/${inst.id}/enrollment-token`)).body;
  return { id: inst.id, token: tok.token };
}

function tempDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-hostkeys-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** The CLI's own enroll against the real control plane, reading host keys from `keyDir`. */
function enrollCli(cp: TestControlPlane, token: string, dir: string, keyDir: string) {
  return runCli(['enroll', '--url', cp.url, '--token', token, '--config', join(dir, 'agent.json'), '--state-dir', join(dir, 'state'), '--ssh-host-key-dir', keyDir]);
}

const cp = await startTestControlPlane();
t.teardown(() => cp.close());

t.test("enrolling records the VM's SSH host keys, and the instance shows them", async (t) => {
  const dir = tempDir(t);
  const keyDir = join(dir, 'etc-ssh');
  mkdirSync(keyDir);
  writeFileSync(join(keyDir, 'ssh_host_ecdsa_key.pub'), `${ECDSA}\n`);
  writeFileSync(join(keyDir, 'ssh_host_ed25519_key.pub'), `${ED25519}\n`);
  // Private keys and other files are never read as host keys; a broken .pub is reported, not sent.
  writeFileSync(join(keyDir, 'ssh_host_ed25519_key'), '-----BEGIN OPENSSH PRIVATE KEY-----\nsecret\n', { mode: 0o600 });
  writeFileSync(join(keyDir, 'sshd_config'), 'PermitRootLogin no\n');
  writeFileSync(join(keyDir, 'ssh_host_broken_key.pub'), 'ssh-ed25519 not-base64!\n');
  const { id, token } = await instanceWithToken(cp);

  const r = await enrollCli(cp, token, dir, keyDir);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, /not reporting .*ssh_host_broken_key\.pub/);
  t.notMatch(r.stderr, /secret/);

  const inst = await cp.api<InstanceBody>('GET', `/api/instances/${id}`);
  t.equal(inst.status, 200);
  t.same(inst.body.ssh_host_keys, [ECDSA, ED25519], 'both keys, as the files hold them');
  t.ok(inst.body.agent, 'and the agent is enrolled');
  const list = await cp.api<{ items: (InstanceBody & { id: string })[] }>('GET', '/api/instances');
  t.same(list.body.items.find((i) => i.id === id)?.ssh_host_keys, [ECDSA, ED25519], 'the list shows them too');
});

t.test('a machine without an SSH host key directory enrolls with no keys', async (t) => {
  const dir = tempDir(t);
  const { id, token } = await instanceWithToken(cp);
  const r = await enrollCli(cp, token, dir, join(dir, 'no-such-dir'));
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr, '');
  t.same((await cp.api<InstanceBody>('GET', `/api/instances/${id}`)).body.ssh_host_keys, []);
  const config = JSON.parse(readFileSync(join(dir, 'agent.json'), 'utf8')) as { instance_id: string };
  t.equal(config.instance_id, id);
});

function enrollBody(token: string, sshHostKeys?: unknown): Record<string, unknown> {
  const { publicKey } = generateKeyPairSync('ed25519');
  return { token, public_key: encodePublicKey(publicKey), hostname: 'web-1', os: 'Debian GNU/Linux 12 (bookworm)', agent_version: '0.1.0', ...(sshHostKeys === undefined ? {} : { ssh_host_keys: sshHostKeys }) };
}
const post = (body: unknown) => cp.api<{ error?: string; message?: string }>('POST', '/api/agents/enroll', { key: null, body });

t.test('malformed host keys are refused, nothing is recorded, and the token stays usable', async (t) => {
  const { id, token } = await instanceWithToken(cp);
  const bad: [string, unknown, RegExp][] = [
    ['a known_hosts line with a host pattern', [`* ${ED25519}`], /body\.ssh_host_keys\.0: must be an OpenSSH public key line/],
    ['a second line smuggled into one entry', [`${ED25519}\n@revoked * ${ECDSA}`], /body\.ssh_host_keys\.0: /],
    ['a type that does not match the key', [`ssh-rsa ${ED25519.split(' ')[1] ?? ''}`], /body\.ssh_host_keys\.0: the key blob does not hold a ssh-rsa key/],
    ['an unknown key type', ['ssh-dss AAAAB3NzaC1kc3MAAACBAP'], /body\.ssh_host_keys\.0: key type ssh-dss is not one of/],
    ['an overlong line', [`${ED25519} ${'x'.repeat(5000)}`], /body\.ssh_host_keys\.0: must be at most 4096 characters/],
    ['nine keys', Array.from({ length: 9 }, () => ED25519), /body\.ssh_host_keys: must list at most 8 keys/],
    ['a string instead of a list', ED25519, /body\.ssh_host_keys: /],
  ];
  for (const [what, keys, message] of bad) {
    const res = await post(enrollBody(token, keys));
    t.equal(res.status, 400, what);
    t.equal(res.body.error, 'invalid_request', what);
    t.match(res.body.message, message, what);
  }
  const inst = await cp.api<InstanceBody>('GET', `/api/instances/${id}`);
  t.same(inst.body.ssh_host_keys, [], 'nothing recorded');
  t.equal(inst.body.agent, null, 'no agent enrolled');
  t.equal((await post(enrollBody(token, [ED25519]))).status, 201, 'the token was not spent by the refusals');
});

t.test('enrolling again replaces the host keys; an agent that sends none leaves them as they were', async (t) => {
  const { id } = await instanceWithToken(cp);
  const again = async () => (await cp.api<{ token: string }>('POST', `/api/instances/${id}/enrollment-token`)).body.token;
  const keysOf = async () => (await cp.api<InstanceBody>('GET', `/api/instances/${id}`)).body.ssh_host_keys;

  t.equal((await post(enrollBody(await again(), [ED25519]))).status, 201);
  t.same(await keysOf(), [ED25519]);
  t.equal((await post(enrollBody(await again(), [ECDSA]))).status, 201, 'a rebuilt VM has new host keys');
  t.same(await keysOf(), [ECDSA]);
  t.equal((await post(enrollBody(await again()))).status, 201, 'an agent from before host keys were reported');
  t.same(await keysOf(), [ECDSA], 'kept: no keys sent is not "no keys"');
});
