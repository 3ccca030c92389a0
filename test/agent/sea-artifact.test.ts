import { execFile, spawn } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, existsSync, readdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { PROTOCOL_VERSION } from '@vmkit/protocol';
import { agentArtifact, artifactSkipReason } from '../helpers/agent-artifact.ts';
import { startTestControlPlane, uniqueInstanceName } from '../helpers/control-plane.ts';
import { plainBashShell, waitAgentState } from '../helpers/real-agent.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { FakeHub } from '../helpers/fake-hub.ts';
import { makeTestCa, opensslMissing } from '../helpers/test-ca.ts';
import { ROOT } from './agent-process.ts';

/**
 * The agent as one file (npm run build:agent): it runs where there is no Node at all,
 * carries its systemd unit, and opens PTYs with the node-pty addon it carries inside.
 */

const run = promisify(execFile);
const skip = prerequisite(artifactSkipReason);

/** A copy of the artifact in a folder of its own, with a PATH on which there is nothing. */
function isolated(t: { teardown(fn: () => unknown): void }, file: string): { exe: string; dir: string; env: Record<string, string> } {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-sea-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const exe = join(dir, 'vmkit-agent');
  copyFileSync(file, exe);
  const empty = join(dir, 'empty-bin');
  writeFileSync(join(dir, '.keep'), '');
  return { exe, dir, env: { PATH: empty, HOME: dir } };
}

t.test('the single file prints its version with no node anywhere on PATH', { skip }, async (t) => {
  const a = await agentArtifact();
  const { exe, env } = isolated(t, a.file);
  const which = await run('/bin/sh', ['-c', 'command -v node'], { env }).then(
    () => 'found',
    () => 'none',
  );
  t.equal(which, 'none', 'no node on this PATH');
  const { stdout } = await run(exe, ['version'], { env });
  t.equal(stdout, `vmkit-agent ${a.manifest.version} (protocol ${PROTOCOL_VERSION}, node ${a.manifest.node})\n`);
  t.match(a.manifest.node, /^v24\./, 'Node 24 inside');
  t.equal(statSync(a.file).size, a.manifest.size, 'the manifest names its size');
  t.equal(createHash('sha256').update(readFileSync(a.file)).digest('hex'), a.manifest.sha256, 'and its sha-256');
});

t.test('NODE_OPTIONS from the environment does not reach the executable', { skip }, async (t) => {
  const a = await agentArtifact();
  const { exe, env } = isolated(t, a.file);
  // --require of a file that does not exist would make node refuse to start.
  const { stdout } = await run(exe, ['version'], { env: { ...env, NODE_OPTIONS: '--require /nonexistent/hook.js' } });
  t.match(stdout, /^vmkit-agent /);
});

t.test('the executable carries the systemd unit of its release', { skip }, async (t) => {
  const a = await agentArtifact();
  const { exe, env } = isolated(t, a.file);
  const { stdout } = await run(exe, ['print-unit'], { env });
  t.equal(stdout, readFileSync(join(ROOT, 'scripts', 'vmkit-agent.service'), 'utf8'));
});

t.test('the build names its target and refuses what it cannot build here', async (t) => {
  const build = (args: string[]) =>
    run(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', 'build-agent.ts'), ...args], { cwd: ROOT }).then(
      (o) => ({ code: 0, stderr: o.stderr }),
      (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
    );
  const arm = await build(['--platform', 'linux-arm64', '--out', join(tmpdir(), 'vmkit-never-written')]);
  t.equal(arm.code, 2);
  t.match(arm.stderr, /cannot build linux-arm64 on linux-x64: the SEA blob and its V8 code cache must be made by the target's own Node/);
  const other = await build(['--platform', 'windows-x64']);
  t.equal(other.code, 2);
  t.match(other.stderr, /unknown platform "windows-x64" \(known: linux-x64, linux-arm64\)/);
  const badVersion = await build(['--version', 'v1']);
  t.equal(badVersion.code, 2);
  t.match(badVersion.stderr, /version "v1" is not a release version/);
  t.notOk(existsSync(join(tmpdir(), 'vmkit-never-written')), 'nothing written');
});

t.test('a SEA agent enrolls, connects and opens a PTY from the addon it carries', { skip }, async (t) => {
  const a = await agentArtifact();
  const { exe, dir, env } = isolated(t, a.file);
  const cp = await startTestControlPlane({ config: { agentHub: { heartbeatIntervalMs: 1_000, deadAfterMs: 10_000 } } });
  t.teardown(() => cp.close());
  const inst = (await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: uniqueInstanceName('sea') } })).body;
  const tok = (await cp.api<{ token: string }>('POST', `/api/instances/${inst.id}/enrollment-token`)).body;
  const config = join(dir, 'agent.json');
  const state = join(dir, 'state');
  await run(exe, ['enroll', '--url', cp.url, '--config', config, '--state-dir', state], { env: { ...env, VMKIT_ENROLLMENT_TOKEN: tok.token } });
  const cfg = JSON.parse(readFileSync(config, 'utf8')) as Record<string, unknown>;
  writeFileSync(config, JSON.stringify({ ...cfg, shell: { default_user: 'root', allow_root: true, program: plainBashShell() } }), { mode: 0o600 });
  // The daemon runs system tools (getent, setpriv); the version test above shows it needs no node.
  const child = spawn(exe, ['run', '--config', config, '--state-dir', state], { env: { ...env, PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  const exited = new Promise((r) => child.once('exit', r));
  t.teardown(async () => {
    child.kill('SIGTERM');
    await exited;
  });
  await waitAgentState(cp, inst.id, 'connected', 60_000).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\n${stderr}`);
  });
  const opener = cp.ctx.shellOpener;
  if (!opener) throw new Error('no shell opener');
  const agentId = String(cfg.agent_id);
  const ch = await opener.open({ agentId, cols: 80, rows: 24, term: 'xterm', command: 'echo pty-$((6*7)); tty' });
  let out = '';
  ch.onData((chunk, done) => {
    out += chunk.toString('utf8');
    done();
  });
  const exit = await new Promise<{ code: number | null }>((resolve) => ch.onExit(resolve));
  t.equal(exit.code, 0, `the command ran (stderr of the agent: ${stderr.slice(-500)})`);
  t.match(out, /pty-42/);
  t.match(out, /\/dev\/pts\/\d+/, 'on a pseudo-terminal');
  const native = readdirSync(join(dir, 'native'));
  t.equal(native.length, 1, 'the addon was written once beside the executable');
  t.match(native[0], /^pty-[0-9a-f]{16}\.node$/);
  t.equal(statSync(join(dir, 'native')).mode & 0o777, 0o700, 'in a private folder');
  t.equal(statSync(join(dir, 'native', native[0] ?? '')).mode & 0o777, 0o500, 'read-only, owner only');
});

t.test('the single file enrolls over https:// and connects on wss:// trusting a private CA (ca_file)', { skip: skip || prerequisite(await opensslMissing()) }, async (t) => {
  const a = await agentArtifact();
  const { exe, dir, env } = isolated(t, a.file);
  const ca = await makeTestCa(dir);
  const hub = await FakeHub.start({ heartbeatIntervalMs: 200, tokens: ['vmkenr_sea_tls'], tls: { cert: readFileSync(ca.certFile, 'utf8'), key: readFileSync(ca.keyFile, 'utf8') } });
  t.teardown(() => hub.close());
  const config = join(dir, 'agent.json');
  const state = join(dir, 'state');
  await run(exe, ['enroll', '--url', hub.baseUrl, '--ca-file', ca.caFile, '--config', config, '--state-dir', state], { env: { ...env, VMKIT_ENROLLMENT_TOKEN: 'vmkenr_sea_tls' } });
  const cfg = JSON.parse(readFileSync(config, 'utf8')) as Record<string, unknown>;
  t.equal(cfg.ca_file, ca.caFile);
  const child = spawn(exe, ['run', '--config', config, '--state-dir', state], { env: { ...env, PATH: '/usr/sbin:/usr/bin:/sbin:/bin' }, stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise((r) => child.once('exit', r));
  t.teardown(async () => {
    child.kill('SIGTERM');
    await exited;
  });
  const conn = await hub.waitForConnection();
  t.ok(conn.helloVerified, 'the SEA agent connected over wss:// with the CA from ca_file');
});
