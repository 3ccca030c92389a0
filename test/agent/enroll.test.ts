import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { encodePublicKey, privateKeyFromPem } from '@vmkit/protocol';
import t from 'tap';
import type { Test } from 'tap';
import { FakeHub } from '../helpers/fake-hub.ts';
import { fixtureKey } from '../helpers/fixtures.ts';
import { runCli } from './agent-process.ts';

const mode = (f: string) => statSync(f).mode & 0o777;

async function setup(t: Test) {
  const hub = await FakeHub.start();
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-enroll-'));
  t.teardown(async () => {
    await hub.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return { hub, dir, configFile: join(dir, 'etc', 'vmkit', 'agent.json'), stateDir: join(dir, 'state') };
}


t.test('enroll makes a private key, registers it and pins the control plane keys in a 0600 config', async (t) => {
  const { hub, configFile, stateDir } = await setup(t);
  hub.tokens.add('vmkenr_good');
  const r = await runCli(['enroll', '--url', hub.baseUrl, '--token', 'vmkenr_good', '--config', configFile, '--state-dir', stateDir]);
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /^enrolled as agt_/);

  t.equal(mode(stateDir), 0o700, 'state dir 0700');
  t.equal(mode(join(stateDir, 'agent.key')), 0o600, 'private key 0600');
  t.equal(mode(configFile), 0o600, 'config 0600');

  const config = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  const cp = fixtureKey('control_plane');
  t.same(config.signing_keys, [{ key_id: cp.keyId, public_key: cp.publicKey }], 'pinned the control plane key');
  t.equal(config.connect_url, hub.connectUrl);
  t.equal(config.state_dir, stateDir);

  const body = hub.enrollRequests[0] as Record<string, unknown>;
  t.equal(body.token, 'vmkenr_good');
  const key = privateKeyFromPem(readFileSync(join(stateDir, 'agent.key'), 'utf8'));
  t.equal(body.public_key, encodePublicKey(key), 'the registered public key is the one on disk');
  t.equal(readFileSync(join(stateDir, 'agent.pub'), 'utf8').trim(), body.public_key);
  t.type(body.hostname, 'string');
  t.type(body.os, 'string');
  t.equal(body.agent_version, '0.1.0');
  t.ok(hub.agents.has(String(config.agent_id)), 'the hub registered the agent id written to the config');
});

t.test('a refused token prints one clear line, exits non-zero and writes nothing', async (t) => {
  const { hub, configFile, stateDir } = await setup(t);
  const r = await runCli(['enroll', '--url', hub.baseUrl, '--token', 'vmkenr_unknown', '--config', configFile, '--state-dir', stateDir]);
  t.not(r.code, 0);
  t.equal(r.stderr.trim().split('\n').length, 1, 'one line');
  t.match(r.stderr, /enrollment refused.*401.*enrollment_token_invalid.*unknown, expired or already used/);
  t.notOk(existsSync(configFile), 'no config');
  t.notOk(existsSync(stateDir), 'no state dir, no key');
});

t.test('a used token cannot enroll a second time', async (t) => {
  const { hub, dir } = await setup(t);
  hub.tokens.add('vmkenr_once');
  const first = await runCli(['enroll', '--url', hub.baseUrl, '--token', 'vmkenr_once', '--config', join(dir, 'a.json'), '--state-dir', join(dir, 'a')]);
  t.equal(first.code, 0, first.stderr);
  const second = await runCli(['enroll', '--url', hub.baseUrl, '--token', 'vmkenr_once', '--config', join(dir, 'b.json'), '--state-dir', join(dir, 'b')]);
  t.not(second.code, 0);
  t.match(second.stderr, /401/);
  t.notOk(existsSync(join(dir, 'b.json')));
});

t.test('--cp-key pins exactly the key vouched for, and refuses a control plane that lacks it', async (t) => {
  const { hub, dir } = await setup(t);
  const cp = fixtureKey('control_plane');
  const next = fixtureKey('control_plane_next');
  hub.announcedKeys = [next];
  hub.tokens.add('vmkenr_a');
  hub.tokens.add('vmkenr_b');
  const ok = await runCli(['enroll', '--url', hub.baseUrl, '--token', 'vmkenr_a', '--cp-key', `${cp.keyId}:${cp.publicKey}`, '--config', join(dir, 'a.json'), '--state-dir', join(dir, 'a')]);
  t.equal(ok.code, 0, ok.stderr);
  const config = JSON.parse(readFileSync(join(dir, 'a.json'), 'utf8')) as { signing_keys: unknown };
  t.same(config.signing_keys, [{ key_id: cp.keyId, public_key: cp.publicKey }], 'only the vouched key, not the second announced one');

  const attacker = fixtureKey('attacker');
  const bad = await runCli(['enroll', '--url', hub.baseUrl, '--token', 'vmkenr_b', '--cp-key', `${attacker.keyId}:${attacker.publicKey}`, '--config', join(dir, 'b.json'), '--state-dir', join(dir, 'b')]);
  t.not(bad.code, 0);
  t.match(bad.stderr, /do not include --cp-key ed25519:/);
  t.equal(bad.stderr.trim().split('\n').length, 1);
  t.notOk(existsSync(join(dir, 'b.json')));
  t.notOk(existsSync(join(dir, 'b')));

  hub.tokens.add('vmkenr_c');
  const garbled = await runCli(['enroll', '--url', hub.baseUrl, '--token', 'vmkenr_c', '--cp-key', `${cp.keyId}:${next.publicKey}`, '--config', join(dir, 'c.json'), '--state-dir', join(dir, 'c')]);
  t.not(garbled.code, 0);
  t.match(garbled.stderr, /does not match its public key/);
  t.ok(hub.tokens.has('vmkenr_c'), 'refused before contacting the control plane');
});

t.test('plain http/ws to a public address is refused unless --insecure', async (t) => {
  const { hub, dir } = await setup(t);
  const r = await runCli(['enroll', '--url', 'http://203.0.113.7:8080', '--token', 'x', '--config', join(dir, 'a.json'), '--state-dir', join(dir, 'a')]);
  t.not(r.code, 0);
  t.match(r.stderr, /http:\/\/ to 203\.0\.113\.7 is not allowed: use https:\/\//);
  t.equal(r.stderr.trim().split('\n').length, 1);

  hub.tokens.add('vmkenr_ws');
  hub.connectUrlOverride = 'ws://cp.example.com/agent/v1/connect';
  const ws = await runCli(['enroll', '--url', hub.baseUrl, '--token', 'vmkenr_ws', '--config', join(dir, 'b.json'), '--state-dir', join(dir, 'b')]);
  t.not(ws.code, 0);
  t.match(ws.stderr, /connect_url is refused: ws:\/\/ to cp\.example\.com is not allowed: use wss:\/\//);
  t.notOk(existsSync(join(dir, 'b.json')));

  hub.tokens.add('vmkenr_ws2');
  const insecure = await runCli(['enroll', '--insecure', '--url', hub.baseUrl, '--token', 'vmkenr_ws2', '--config', join(dir, 'c.json'), '--state-dir', join(dir, 'c')]);
  t.equal(insecure.code, 0, insecure.stderr);
  t.equal((JSON.parse(readFileSync(join(dir, 'c.json'), 'utf8')) as { insecure?: boolean }).insecure, true, 'insecure recorded in the config');
});

t.test('enrolling an enrolled machine again needs --force', async (t) => {
  const { hub, configFile, stateDir } = await setup(t);
  hub.tokens.add('vmkenr_1');
  hub.tokens.add('vmkenr_2');
  t.equal((await runCli(['enroll', '--url', hub.baseUrl, '--token', 'vmkenr_1', '--config', configFile, '--state-dir', stateDir])).code, 0);
  const again = await runCli(['enroll', '--url', hub.baseUrl, '--token', 'vmkenr_2', '--config', configFile, '--state-dir', stateDir]);
  t.equal(again.code, 78);
  t.match(again.stderr, /already enrolled.*--force/);
  t.ok(hub.tokens.has('vmkenr_2'), 'token not spent');
  const forced = await runCli(['enroll', '--force', '--url', hub.baseUrl, '--token', 'vmkenr_2', '--config', configFile, '--state-dir', stateDir]);
  t.equal(forced.code, 0, forced.stderr);
});
