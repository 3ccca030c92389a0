import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newId, signCommand } from '@vmkit/protocol';
import type { AgentMessage } from '@vmkit/protocol';
import { CommandDispatcher } from '../../vmkit-agent/src/dispatcher.ts';
import { ExecutorRegistry } from '../../vmkit-agent/src/executors/index.ts';
import t from 'tap';
import { backoffCeiling, fullJitterDelay } from '../../vmkit-agent/src/backoff.ts';
import { ConfigError } from '../../vmkit-agent/src/config.ts';
import { parseCpKey } from '../../vmkit-agent/src/enroll.ts';
import { collectFacts, parseGroup, parseOsRelease } from '../../vmkit-agent/src/executors/facts.ts';
import { ResultJournal } from '../../vmkit-agent/src/journal.ts';
import { createLogger } from '../../vmkit-agent/src/log.ts';
import { checkTransport, isLocalHost } from '../../vmkit-agent/src/transport-policy.ts';
import { CommandVerifier } from '../../vmkit-agent/src/verify.ts';
import { fixtureKey } from '../helpers/fixtures.ts';

const quiet = createLogger('error', () => undefined);

function tempDir(t: { teardown(fn: () => void): void }): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

t.test('reconnect delays use full jitter under an exponential ceiling with a cap', async (t) => {
  const opts = { baseMs: 500, capMs: 60_000 };
  t.same([0, 1, 2, 3, 7, 50].map((a) => backoffCeiling(a, opts)), [500, 1000, 2000, 4000, 60_000, 60_000]);
  t.equal(fullJitterDelay(3, opts, () => 0), 0, 'can be zero');
  t.equal(fullJitterDelay(3, opts, () => 0.999999), 3999, 'stays under the ceiling');
  t.equal(fullJitterDelay(1000, opts, () => 0.5), 30_000, 'huge attempt counts stay capped');
  const samples = Array.from({ length: 2000 }, () => fullJitterDelay(10, opts));
  const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
  t.ok(mean > 25_000 && mean < 35_000, `spread over the whole window (mean ${Math.round(mean)})`);
});

t.test('plain ws:// is allowed only to loopback and link-local IP literals', async (t) => {
  for (const h of ['127.0.0.1', 'localhost', '[::1]', '169.254.10.1', '[fe80::1]']) t.ok(isLocalHost(h), h);
  for (const h of ['203.0.113.7', 'example.com', '172.32.0.1', '8.8.8.8', '[2001:db8::1]', 'localhost.evil.com', '10.0.0.1.nip.io']) t.notOk(isLocalHost(h), h);
  for (const h of ['10.200.0.1', '172.20.1.1', '192.168.1.5', '[fd00::5]']) t.notOk(isLocalHost(h), `${h}: a private network is not the machine's own link`);
  t.match(checkTransport('wss://cp.example.com/agent/v1/connect', 'ws', false), { ok: true, plain: false });
  t.match(checkTransport('ws://cp.example.com/agent/v1/connect', 'ws', false), { ok: false });
  t.match(checkTransport('ws://cp.example.com/agent/v1/connect', 'ws', true), { ok: true, plain: true });
  t.match(checkTransport('https://cp.example.com', 'ws', false), { ok: false, reason: /https:\/\/ is not supported here/ });
  t.match(checkTransport('not a url', 'http', false), { ok: false, reason: /is not a URL/ });
});

t.test('--cp-key parses KEY_ID:PUBKEY and checks that the id matches the key', async (t) => {
  const cp = fixtureKey('control_plane');
  t.same(parseCpKey(`${cp.keyId}:${cp.publicKey}`), { key_id: cp.keyId, public_key: cp.publicKey });
  t.throws(() => parseCpKey(cp.publicKey), ConfigError);
  t.throws(() => parseCpKey(`${cp.keyId}:${fixtureKey('attacker').publicKey}`), /does not match/);
});

t.test('facts read os-release, users and groups of interest, and the docker socket', async (t) => {
  const dir = tempDir(t);
  writeFileSync(join(dir, 'os-release'), 'PRETTY_NAME="Ubuntu 24.04.1 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\nID=ubuntu\nID_LIKE=debian\n# comment\n');
  writeFileSync(join(dir, 'passwd'), 'root:x:0:0:root:/root:/bin/bash\nkamal:x:1001:1001::/home/kamal:/bin/bash\n');
  writeFileSync(join(dir, 'group'), 'root:x:0:\nkamal:x:1001:\ndocker:x:998:kamal,ops\n');
  const sock = join(dir, 'docker.sock');
  const server = createServer();
  await new Promise<void>((r) => server.listen(sock, r));
  t.teardown(() => server.close());
  writeFileSync(join(dir, 'docker'), '#!/bin/sh\n', { mode: 0o755 });
  const facts = await collectFacts({
    osReleaseFiles: [join(dir, 'missing'), join(dir, 'os-release')],
    passwdFile: join(dir, 'passwd'),
    groupFile: join(dir, 'group'),
    dockerSocket: sock,
    sshdCandidates: [join(dir, 'no-sshd')],
    path: dir,
  });
  t.same(facts.os_release, { id: 'ubuntu', id_like: 'debian', name: 'Ubuntu', pretty_name: 'Ubuntu 24.04.1 LTS', version_id: '24.04' });
  t.same(facts.docker, { binary: join(dir, 'docker'), socket: true, group: { gid: 998, members: ['kamal', 'ops'] } });
  t.same((facts.users as Record<string, unknown>).kamal, { exists: true, uid: 1001, gid: 1001, home: '/home/kamal', shell: '/bin/bash', groups: ['kamal', 'docker'] });
  t.same(facts.sshd, { present: false });

  const bare = await collectFacts({ osReleaseFiles: [], passwdFile: join(dir, 'x'), groupFile: join(dir, 'y'), dockerSocket: join(dir, 'z'), sshdCandidates: [], path: '' });
  t.same(bare.users, { root: { exists: false }, kamal: { exists: false } });
  t.same(bare.docker, { binary: null, socket: false, group: null });
  t.same(parseOsRelease("A='x y'\nB=\"q\\\"uote\"\n"), { A: 'x y', B: 'q"uote' });
  t.same(parseGroup('bad line\n'), []);
});

t.test('the replay cache survives a restart and a corrupt one stops the agent', async (t) => {
  const dir = tempDir(t);
  const cp = fixtureKey('control_plane');
  const agentId = newId('agent');
  const keys = [{ key_id: cp.keyId, public_key: cp.publicKey }];
  const file = join(dir, 'replay.json');
  const v1 = await CommandVerifier.open(file, agentId, keys);
  const cmd = signCommand(cp, { agentId, type: 'ping', params: {} });
  t.equal(v1.verify(cmd.envelope, cmd.signature).ok, true);
  await v1.remember(cmd.envelope);
  const v2 = await CommandVerifier.open(file, agentId, keys);
  t.match(v2.verify(cmd.envelope, cmd.signature), { ok: false, reason: 'replayed' }, 'remembered across a restart');
  // Entries past expiry + skew are pruned when loading.
  const later = await CommandVerifier.open(file, agentId, keys, cmd.envelope.expires_at + 31_000);
  t.equal(later.size, 0, 'expired entries pruned');

  writeFileSync(file, '{"version":1,"entries":[{"id":');
  await t.rejects(CommandVerifier.open(file, agentId, keys), ConfigError);
});

t.test('the journal turns interrupted commands into failures and prunes acknowledged results after expiry', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'j'));
  const cp = fixtureKey('control_plane');
  const agentId = newId('agent');
  const j = await ResultJournal.open(join(dir, 'j'), quiet);
  const a = signCommand(cp, { agentId, type: 'ping', params: {} }).envelope;
  const b = signCommand(cp, { agentId, type: 'facts', params: {} }).envelope;
  await j.begin(a);
  await j.begin(b);
  await j.finish(a.id, { protocol: 1, type: 'result', command_id: a.id, status: 'succeeded', output: { pong: true }, finished_at: 1 });
  t.same(j.unacked().map((r) => r.command_id), [a.id]);
  t.equal(await j.ack(a.id), true);
  t.equal(await j.ack(a.id), false, 'acking twice is a no-op');
  t.same(j.unacked(), []);
  writeFileSync(join(dir, 'j', 'garbage.json'), 'nope');

  const reopened = await ResultJournal.open(join(dir, 'j'), quiet);
  t.match(reopened.get(b.id), { state: 'finished', result: { status: 'failed', error: { key: 'command_interrupted' } } });
  t.same(reopened.unacked().map((r) => r.command_id), [b.id], 'the interrupted one is reported');
  t.equal(reopened.get(a.id)?.acked, true);
  t.equal(await reopened.prune(a.expires_at + 31_000), 1, 'acked record dropped once it can no longer be replayed');
  t.equal(reopened.get(a.id), undefined);
  t.notOk(readFileSync(join(dir, 'j', `${b.id}.json`), 'utf8').includes('"acked":true'));
});

t.test('an interrupted harden gets the result its recovery at start gives, not a generic failure', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'j'));
  const cp = fixtureKey('control_plane');
  const agentId = newId('agent');
  const j = await ResultJournal.open(join(dir, 'j'), quiet);
  const harden = signCommand(cp, { agentId, type: 'harden', params: { deploy_keys: [], dry_run: false } }).envelope;
  const other = signCommand(cp, { agentId, type: 'facts', params: {} }).envelope;
  await j.begin(harden);
  await j.begin(other);
  const recovered = {
    protocol: 1 as const,
    type: 'result' as const,
    command_id: harden.id,
    status: 'failed' as const,
    error: { key: 'command_interrupted' as const, message: 'rolled every change back' },
    output: { status: 'rolled_back', recovery: { action: 'rolled_back', reason: 'last step journaled: user_kamal' } },
    finished_at: 2,
  };
  const reopened = await ResultJournal.open(join(dir, 'j'), quiet, Date.now(), (id) => (id === harden.id ? recovered : undefined));
  t.same(reopened.get(harden.id)?.result, recovered, 'the harden answers with its recovery');
  t.match(reopened.get(other.id), { result: { error: { key: 'command_interrupted' } } }, 'others stay generic failures');
});

t.test('the crash-test stop flag is never passed by the systemd unit or the installer', async (t) => {
  const root = join(import.meta.dirname, '..', '..');
  for (const f of ['scripts/vmkit-agent.service', 'scripts/install-agent.sh']) {
    const text = readFileSync(join(root, f), 'utf8');
    t.match(text, /\brun\b/, `${f} starts the daemon`);
    t.notMatch(text, /test-stop/, `${f} never passes --test-stop-at-harden-steps`);
  }
});

t.test('stopping waits (bounded) for a running command to finish and journal its result', async (t) => {
  const dir = tempDir(t);
  mkdirSync(join(dir, 'journal'));
  const cp = fixtureKey('control_plane');
  const agentId = newId('agent');
  const keys = [{ key_id: cp.keyId, public_key: cp.publicKey }];
  const verifier = await CommandVerifier.open(join(dir, 'replay.json'), agentId, keys);
  const journal = await ResultJournal.open(join(dir, 'journal'), quiet);
  let release: () => void = () => undefined;
  const gate = new Promise<void>((r) => (release = r));
  const executors = new ExecutorRegistry().register('ping', {
    exclusive: true,
    run: async (_p, ctx) => {
      ctx.progress('wait', 'started');
      await gate;
      return { status: 'succeeded', output: { slow: true } };
    },
  });
  const sent: AgentMessage[] = [];
  // The executor's progress message is the event that says the command is running.
  let running: () => void = () => undefined;
  const isRunning = new Promise<void>((r) => (running = r));
  const dispatcher = new CommandDispatcher({
    verifier,
    journal,
    executors,
    keys: { keyIds: () => [cp.keyId], list: () => keys, replace: () => Promise.resolve() },
    log: quiet,
    send: (m) => {
      sent.push(m);
      if (m.type === 'progress') running();
      return true;
    },
    signal: new AbortController().signal,
  });
  const cmd = signCommand(cp, { agentId, type: 'ping', params: {} });
  const handled = dispatcher.handleCommand({ protocol: 1, type: 'command', envelope: cmd.envelope, signature: cmd.signature });
  await isRunning;
  t.same(sent.map((m) => m.type), ['ack', 'progress'], 'acked and running');
  // The gate is still closed, so a bounded wait cannot see the command finish, however slow the machine.
  t.equal(await dispatcher.drain(100), false, 'a bounded wait gives up while it runs');
  const finished = dispatcher.drain(60_000);
  release();
  t.equal(await finished, true, 'and returns once it finished');
  await handled;
  t.equal(journal.get(cmd.envelope.id)?.state, 'finished', 'result journaled');
  t.match(sent.at(-1), { type: 'result', status: 'succeeded', output: { slow: true } });
  t.equal(await dispatcher.drain(10), true, 'nothing left to wait for');
});
