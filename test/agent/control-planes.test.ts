/**
 * An agent with several control-plane URLs (the processes of one fleet, each at its own
 * address) and an agent that trusts a private CA: real agent processes against fake
 * hubs on loopback, plain and TLS.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { FakeHub } from '../helpers/fake-hub.ts';
import { freePort } from '../helpers/cp-process.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { makeTestCa, opensslMissing } from '../helpers/test-ca.ts';
import { AgentProcess, TEST_RECONNECT, enrolledAgent, runCli } from './agent-process.ts';
import { baseUrlOf, connectUrlOf, dialUrls, downloadBases } from '../../vmkit-agent/src/control-planes.ts';

const needsOpenssl = { skip: prerequisite(await opensslMissing()) };

function tempDir(t: Test, prefix: string): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

const statusOf = (stateDir: string) => JSON.parse(readFileSync(join(stateDir, 'status.json'), 'utf8')) as { state: string; connect_url: string };

t.test('connect URLs and release bases are derived as the control plane announces them', (t) => {
  t.equal(connectUrlOf('https://cp-b.example/'), 'wss://cp-b.example/agent/v1/connect');
  t.equal(connectUrlOf('http://127.0.0.1:8788/some/path?x=1'), 'ws://127.0.0.1:8788/agent/v1/connect', 'the path is the hub\'s own, as agentConnectUrl does');
  t.equal(baseUrlOf('wss://cp-b.example/agent/v1/connect'), 'https://cp-b.example/');
  t.equal(baseUrlOf('ws://127.0.0.1:1/vmkit/agent/v1/connect'), 'http://127.0.0.1:1/vmkit/', 'a proxy prefix is kept');
  t.equal(baseUrlOf('wss://cp-c.example/elsewhere'), 'https://cp-c.example/');
  const config = { control_plane_url: 'https://lb.example/', connect_url: 'wss://lb.example/agent/v1/connect', connect_urls: ['wss://cp-b.example/agent/v1/connect', 'wss://lb.example/agent/v1/connect'] };
  t.same(dialUrls(config), ['wss://lb.example/agent/v1/connect', 'wss://cp-b.example/agent/v1/connect'], 'each URL once, connect_url first');
  t.same(downloadBases(config), ['https://lb.example/', 'https://cp-b.example/']);
  t.end();
});

t.test('the first URL dead: the agent dials the next, and moves between them when a connection drops', async (t) => {
  const hub = await FakeHub.start({ heartbeatIntervalMs: 200 });
  t.teardown(() => hub.close());
  const agent = await enrolledAgent(t, hub);
  // A port nothing listens on stands for a control-plane process that died.
  const dead = `ws://127.0.0.1:${await freePort()}/agent/v1/connect`;
  agent.patchConfig({ connect_url: dead, connect_urls: [hub.connectUrl] });
  const proc = agent.start();
  const first = await hub.waitForConnection();
  t.ok(first.helloVerified, 'connected through the second URL');
  await proc.waitForLog(/^info connected .*"url":"ws:\/\/127\.0\.0\.1:\d+\/agent\/v1\/connect"/);
  t.ok(proc.lines(new RegExp(`^warn connection error .*${dead.replace(/[/.]/g, '\\$&')}`)).length >= 1, 'the dead URL was dialled first and failed');
  await hub.waitFor(() => (statusOf(agent.stateDir).state === 'connected' ? true : undefined), 'status connected');
  t.equal(statusOf(agent.stateDir).connect_url, hub.connectUrl, 'status names the URL in use');
  const shown = await runCli(['status', '--config', agent.configFile]);
  t.match(shown.stdout, new RegExp(`control plane:\\s+${hub.connectUrl.replace(/[/.]/g, '\\$&')}\\n`), 'vmkit-agent status names it too');

  // The hub drops the agent: the next dial goes to the (dead) first URL, the one after back to the hub.
  const deadErrors = proc.lines(/^warn connection error .*"url":"ws:\/\/127\.0\.0\.1:\d+/).filter((l) => l.includes(dead)).length;
  hub.dropAll();
  const second = await hub.waitForConnection(2);
  t.ok(second.helloVerified, 'back on the hub');
  // The agent's stderr reaches this process a little after the hub saw the connection.
  const deadAfter = await hub.waitFor(() => {
    const n = proc.lines(/^warn connection error /).filter((l) => l.includes(dead)).length;
    return n > deadErrors ? n : undefined;
  }, 'a failed dial of the dead URL logged after the drop');
  t.equal(deadAfter, deadErrors + 1, 'after the drop the dead URL was dialled once, in turn, before the hub again');
});

t.test('a bad URL list is a configuration error in one line', async (t) => {
  const hub = await FakeHub.start();
  t.teardown(() => hub.close());
  const agent = await enrolledAgent(t, hub);
  agent.patchConfig({ connect_urls: ['ws://198.51.100.7/agent/v1/connect'] });
  const plain = await runCli(['run', '--config', agent.configFile]);
  t.equal(plain.code, 78);
  t.equal(plain.stderr.trim().split('\n').length, 1, plain.stderr);
  t.match(plain.stderr, /connect_urls\[0\] in .*agent\.json: ws:\/\/ to 198\.51\.100\.7 is not allowed: use wss:\/\//);
  agent.patchConfig({ connect_urls: Array.from({ length: 8 }, (_, i) => `wss://cp-${i}.example/agent/v1/connect`) });
  const many = await runCli(['run', '--config', agent.configFile]);
  t.equal(many.code, 78);
  t.match(many.stderr, /is invalid at connect_urls: Too big: expected array to have <=7 items/);
});

t.test('enroll with several --url: a dead one is passed over, and every one is kept for the daemon', async (t) => {
  const hub = await FakeHub.start();
  t.teardown(() => hub.close());
  hub.tokens.add('vmkenr_fleet');
  const dir = tempDir(t, 'vmkit-enroll-fleet-');
  const deadPort = await freePort();
  const configFile = join(dir, 'agent.json');
  const r = await runCli(['enroll', '--url', `http://127.0.0.1:${deadPort}`, '--url', hub.baseUrl, '--token', 'vmkenr_fleet', '--config', configFile, '--state-dir', join(dir, 'state')]);
  t.equal(r.code, 0, r.stderr);
  const config = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  t.equal(config.control_plane_url, `${hub.baseUrl}/`, 'the control plane that answered');
  t.equal(config.connect_url, hub.connectUrl, 'its announced connect URL first');
  t.same(config.connect_urls, [`ws://127.0.0.1:${deadPort}/agent/v1/connect`], 'the other, as it would announce itself');

  const none = await runCli(['enroll', '--url', `http://127.0.0.1:${deadPort}`, '--url', `http://127.0.0.1:${deadPort}/x`, '--token', 'vmkenr_x', '--config', join(dir, 'b.json'), '--state-dir', join(dir, 'b')]);
  t.equal(none.code, 1);
  t.equal(none.stderr.trim().split('\n').length, 1, none.stderr);
  t.match(none.stderr, /cannot reach any control plane: http:\/\/127\.0\.0\.1:\d+\/api\/agents\/enroll: .*; http:\/\/127\.0\.0\.1:\d+\/x\/api\/agents\/enroll: /);

  const refused = await runCli(['enroll', '--url', hub.baseUrl, '--url', `http://127.0.0.1:${deadPort}`, '--token', 'vmkenr_unknown', '--config', join(dir, 'c.json'), '--state-dir', join(dir, 'c')]);
  t.equal(refused.code, 1);
  t.match(refused.stderr, /enrollment refused by the control plane: HTTP 401 \(enrollment_token_invalid\)/, 'a refusal is final: the next URL is not asked');
  t.equal(hub.enrollRequests.length, 2, 'one request for the enrolled agent, one for the refused token');
});

t.test('ca_file: the agent enrolls over https:// and dials wss:// trusting a private CA, and only it', needsOpenssl, async (t) => {
  const dir = tempDir(t, 'vmkit-agent-ca-');
  const ca = await makeTestCa(dir);
  const hub = await FakeHub.start({ heartbeatIntervalMs: 200, tls: { cert: readFileSync(ca.certFile, 'utf8'), key: readFileSync(ca.keyFile, 'utf8') } });
  t.teardown(() => hub.close());
  hub.tokens.add('vmkenr_tls');
  const configFile = join(dir, 'agent.json');
  const stateDir = join(dir, 'state');

  const untrusted = await runCli(['enroll', '--url', hub.baseUrl, '--token', 'vmkenr_tls', '--config', configFile, '--state-dir', stateDir]);
  t.equal(untrusted.code, 1, 'the system roots do not know the private CA');
  t.match(untrusted.stderr, /cannot reach the control plane: https:\/\/127\.0\.0\.1:\d+\/api\/agents\/enroll: .*(local issuer|self-signed|verify)/);

  writeFileSync(join(dir, 'not-a-cert.pem'), 'hello\n');
  const bad = await runCli(['enroll', '--url', hub.baseUrl, '--ca-file', join(dir, 'not-a-cert.pem'), '--token', 'vmkenr_tls', '--config', configFile, '--state-dir', stateDir]);
  t.equal(bad.code, 78);
  t.match(bad.stderr, /--ca-file .*not-a-cert\.pem holds no PEM certificate/);

  const ok = await runCli(['enroll', '--url', hub.baseUrl, '--ca-file', ca.caFile, '--token', 'vmkenr_tls', '--config', configFile, '--state-dir', stateDir]);
  t.equal(ok.code, 0, ok.stderr);
  const config = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
  t.equal(config.ca_file, ca.caFile, 'ca_file kept in the config');
  t.match(config.connect_url, /^wss:\/\/127\.0\.0\.1:\d+\/agent\/v1\/connect$/);
  writeFileSync(configFile, JSON.stringify({ ...config, reconnect: TEST_RECONNECT }, null, 2), { mode: 0o600 });

  const proc = new AgentProcess(['run', '--config', configFile]);
  t.teardown(() => proc.stop());
  const conn = await hub.waitForConnection();
  t.ok(conn.helloVerified, 'connected over wss:// with the private CA');
  await proc.stop();

  // Another CA in ca_file: the hub's certificate is refused at every dial.
  const other = await makeTestCa(tempDir(t, 'vmkit-agent-ca2-'), 'other');
  writeFileSync(configFile, JSON.stringify({ ...config, ca_file: other.caFile, reconnect: TEST_RECONNECT }, null, 2), { mode: 0o600 });
  const before = hub.connections.length;
  const distrusting = new AgentProcess(['run', '--config', configFile]);
  t.teardown(() => distrusting.stop());
  const line = await distrusting.waitForLog(/^warn connection error .*wss:/);
  t.match(line, /certificate|issuer|verify/, 'the TLS refusal is logged');
  t.equal(hub.connections.length, before, 'no WebSocket reached the hub');

  writeFileSync(configFile, JSON.stringify({ ...config, ca_file: join(dir, 'absent.pem') }, null, 2), { mode: 0o600 });
  const missing = await runCli(['run', '--config', configFile]);
  t.equal(missing.code, 78);
  t.equal(missing.stderr.trim().split('\n').length, 1, missing.stderr);
  t.match(missing.stderr, /ca_file in .*agent\.json: .*absent\.pem cannot be read: ENOENT/);
});
