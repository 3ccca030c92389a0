import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { FakeHub } from '../helpers/fake-hub.ts';
import { BIN, enrolledAgent, runCli } from './agent-process.ts';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const oneLine = (s: string) => s.trim().split('\n').length === 1;

t.test('config problems print one clear line and exit 78', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-config-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));

  const missing = await runCli(['run', '--config', join(dir, 'absent.json')]);
  t.equal(missing.code, 78);
  t.ok(oneLine(missing.stderr));
  t.match(missing.stderr, /^vmkit-agent: config file .*absent\.json does not exist/);

  writeFileSync(join(dir, 'broken.json'), '{"version": 1,');
  const broken = await runCli(['status', '--config', join(dir, 'broken.json')]);
  t.equal(broken.code, 78);
  t.ok(oneLine(broken.stderr));
  t.match(broken.stderr, /is not valid JSON/);

  writeFileSync(join(dir, 'wrong.json'), JSON.stringify({ version: 1, agent_id: 'bob' }));
  const wrong = await runCli(['run', '--config', join(dir, 'wrong.json')]);
  t.equal(wrong.code, 78);
  t.ok(oneLine(wrong.stderr));
  t.match(wrong.stderr, /is invalid at agent_id: must be a agt_ id/);
});

t.test('a private key readable by others, or missing, stops the daemon with one line', async (t) => {
  const hub = await FakeHub.start();
  t.teardown(() => hub.close());
  const agent = await enrolledAgent(t, hub);
  chmodSync(join(agent.stateDir, 'agent.key'), 0o644);
  const open = await runCli(['run', '--config', agent.configFile]);
  t.equal(open.code, 78);
  t.ok(oneLine(open.stderr));
  t.match(open.stderr, /agent\.key is accessible by others \(mode 644\); chmod 600 it/);

  const elsewhere = await runCli(['run', '--config', agent.configFile, '--state-dir', join(agent.dir, 'nowhere')]);
  t.equal(elsewhere.code, 78);
  t.ok(oneLine(elsewhere.stderr));
  t.match(elsewhere.stderr, /agent key .*nowhere\/agent\.key does not exist/);
});

t.test('usage errors exit 2 and version works through the bin shim', async (t) => {
  const unknown = await runCli(['frobnicate']);
  t.equal(unknown.code, 2);
  t.ok(oneLine(unknown.stderr));
  const badFlag = await runCli(['run', '--nope']);
  t.equal(badFlag.code, 2);
  t.match(badFlag.stderr, /Unknown option '--nope'/);
  const noToken = await runCli(['enroll', '--url', 'https://cp.example']);
  t.equal(noToken.code, 2);
  t.match(noToken.stderr, /enroll needs --token/);

 const { stdout: version } = await promisify(execFile)(process.execPath, [BIN, 'version']);
  t.match(version, /^vmkit-agent 0\.1\.0 \(protocol 1, node v\d+/);
});

t.test('a second daemon on the same state directory refuses to start; a stale pid file is taken over', async (t) => {
  const hub = await FakeHub.start({ heartbeatIntervalMs: 200 });
  t.teardown(() => hub.close());
  const agent = await enrolledAgent(t, hub);
  // A pid file left by a daemon that died (this pid is not a vmkit-agent).
  writeFileSync(join(agent.stateDir, 'daemon.pid'), `${process.ppid}\n`);
  const first = agent.start();
  await hub.waitForConnection();
  t.equal(readFileSync(join(agent.stateDir, 'daemon.pid'), 'utf8').trim(), String(first.child.pid), 'stale pid file taken over');
  const second = await runCli(['run', '--config', agent.configFile]);
  t.equal(second.code, 1);
  t.ok(oneLine(second.stderr), second.stderr);
  t.match(second.stderr, new RegExp(`another vmkit-agent \\(pid ${first.child.pid}\\) is running with this state directory`));
  t.ok(first.alive, 'the first one keeps running');
  await first.stop();
  t.notOk(existsSync(join(agent.stateDir, 'daemon.pid')), 'released on stop');
});
