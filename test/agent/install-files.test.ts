import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { FakeHub } from '../helpers/fake-hub.ts';
import { ROOT } from './agent-process.ts';
import { prerequisite } from '../helpers/prereq.ts';

const run = promisify(execFile);
const UNIT = join(ROOT, 'scripts', 'vmkit-agent.service');
const SCRIPT = join(ROOT, 'scripts', 'install-agent.sh');

async function has(bin: string): Promise<boolean> {
  try {
    await run('sh', ['-c', 'command -v "$1"', 'sh', bin]);
    return true;
  } catch {
    return false;
  }
}

const noAnalyze = prerequisite((await has('systemd-analyze')) ? false : 'systemd-analyze is not installed');
const noShellcheck = prerequisite((await has('shellcheck')) ? false : 'shellcheck is not installed');
// A host that runs systemd is not a missing prerequisite but a reason never to run the
// script here (it would install a real unit); install-sandbox.test.ts covers it there.
const noInstall =
  prerequisite(process.getuid?.() !== 0 && 'needs root (the script refuses to run otherwise)') ||
  (existsSync('/run/systemd/system') && 'this machine runs systemd; the script would install a real unit');

t.test('the systemd unit passes systemd-analyze verify', { skip: noAnalyze }, async (t) => {
  const r = await run('systemd-analyze', ['verify', UNIT]).then(
    (o) => ({ code: 0, stderr: o.stderr }),
    (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
  );
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr.trim(), '', 'no warnings');
  const unit = readFileSync(UNIT, 'utf8');
  t.match(unit, /^Restart=always$/m);
  t.match(unit, /^RestartSec=\d+/m);
  t.match(unit, /^StateDirectory=vmkit-agent$/m);
  t.match(unit, /^StandardError=journal$/m);
  t.notMatch(unit, /^MemoryDenyWriteExecute=yes/m, 'node needs W+X pages for its JIT');
  t.notMatch(unit, /^ProtectSystem=/m, 'harden must write /etc');
});

t.test('the install script is shellcheck-clean, strict, and has no eval', { skip: noShellcheck }, async (t) => {
  const r = await run('shellcheck', [SCRIPT]).then(
    (o) => ({ code: 0, out: o.stdout }),
    (e: { code: number; stdout: string }) => ({ code: e.code, out: e.stdout }),
  );
  t.equal(r.code, 0, r.out);
  const text = readFileSync(SCRIPT, 'utf8');
  t.match(text, /^set -euo pipefail$/m);
  t.notMatch(text, /\beval\b/);
});

t.test('the install script refuses bad arguments before touching anything', async (t) => {
  const bad = await run('bash', [SCRIPT, 'ftp://x', 'tok']).catch((e: { code: number; stderr: string }) => e);
  t.equal((bad as { code: number }).code, 1);
  t.match((bad as { stderr: string }).stderr, /URL must start with https:\/\//);
  const usage = await run('bash', [SCRIPT]).catch((e: { code: number; stderr: string }) => e);
  t.equal((usage as { code: number }).code, 2);
  const viaSh = await run('sh', [SCRIPT, 'https://cp', 'vmkenr_x']).catch((e: { code: number; stderr: string }) => e);
  t.equal((viaSh as { code: number }).code, 2);
  t.match((viaSh as { stderr: string }).stderr, /run it with bash/);
});

t.test('the install script downloads the bundle, enrolls and starts the agent (systemd skipped here)', { skip: noInstall }, async (t) => {
  const hub = await FakeHub.start({ heartbeatIntervalMs: 200 });
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-install-'));
  const pidFile = join(dir, 'agent.pid');
  t.teardown(async () => {
    const pid = existsSync(pidFile) ? Number(readFileSync(pidFile, 'utf8')) : 0;
    if (pid > 0) {
      try {
        process.kill(pid, 'SIGTERM');
      } catch {
        // already gone
      }
    }
    await hub.close();
    rmSync(dir, { recursive: true, force: true });
  });
  // The bundle as the control plane serves it (control-plane/src/hub/bundle.ts layout).
  writeFileSync(join(dir, 'package.json'), JSON.stringify({ name: 'vmkit-agent-bundle', private: true, type: 'module', workspaces: ['shared-protocol', 'vmkit-agent'] }));
  const tarball = join(dir, 'bundle.tar.gz');
  await run('tar', [
    '-czf', tarball, '--exclude=node_modules', '--transform=s,^,vmkit-agent-bundle/,',
    '-C', dir, 'package.json',
    '-C', ROOT, 'shared-protocol/package.json', 'shared-protocol/src', 'vmkit-agent/package.json', 'vmkit-agent/src', 'vmkit-agent/bin', 'scripts/vmkit-agent.service',
  ]);
  hub.bundle = readFileSync(tarball);
  hub.tokens.add('vmkenr_install');

  const prefix = join(dir, 'opt', 'vmkit-agent');
  const env = {
    ...process.env,
    VMKIT_AGENT_PREFIX: prefix,
    VMKIT_AGENT_CONFIG: join(dir, 'etc', 'agent.json'),
    VMKIT_AGENT_STATE_DIR: join(dir, 'state'),
    VMKIT_AGENT_LOG: join(dir, 'agent.log'),
    VMKIT_AGENT_PIDFILE: pidFile,
    VMKIT_INSTALL_SKIP_APT: '1',
    // No registry from tests: the repository's node_modules stand in for `npm install`.
    VMKIT_AGENT_NODE_MODULES: join(ROOT, 'node_modules'),
  };
  const r = await run('bash', [SCRIPT, hub.baseUrl, 'vmkenr_install'], { env, timeout: 60_000 }).catch(
    (e: { code: number; stdout: string; stderr: string }) => e,
  );
  const out = (r as { stdout: string }).stdout;
  t.equal((r as { code?: number }).code ?? 0, 0, (r as { stderr: string }).stderr);
  t.match(out, /systemd: skipped/);
  t.match(out, /enrolled as agt_/);
  t.match(out, /connected/);
  t.ok(Number(readFileSync(pidFile, 'utf8')) > 0, 'pid file written');
  t.ok(existsSync(join(prefix, 'vmkit-agent', 'bin', 'vmkit-agent.js')), 'unpacked to the prefix');
  t.equal(statSync(join(dir, 'state', 'agent.key')).mode & 0o777, 0o600);
  const conn = await hub.waitForConnection();
  t.equal(conn.helloVerified, true, 'the installed agent connected and proved its identity');
  t.equal((hub.enrollRequests[0] as Record<string, unknown>).token, 'vmkenr_install', 'the token reached the control plane (through the environment, not argv)');
});
