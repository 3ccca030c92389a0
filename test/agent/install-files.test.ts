import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
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
t.test('the systemd unit passes systemd-analyze verify', { skip: noAnalyze }, async (t) => {
  // verify checks that ExecStart's program exists: the installed path is not on this
  // machine, so a copy names /bin/true in its place (the line itself is checked below).
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const copy = join(dir, 'vmkit-agent.service');
  writeFileSync(copy, readFileSync(UNIT, 'utf8').replace('/opt/vmkit-agent/current/vmkit-agent', '/bin/true'));
  const r = await run('systemd-analyze', ['verify', copy]).then(
    (o) => ({ code: 0, stderr: o.stderr }),
    (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
  );
  t.equal(r.code, 0, r.stderr);
  t.equal(r.stderr.trim(), '', 'no warnings');
  const unit = readFileSync(UNIT, 'utf8');
  t.match(unit, /^ExecStart=\/opt\/vmkit-agent\/current\/vmkit-agent run --config \/etc\/vmkit\/agent.json --state-dir \/var\/lib\/vmkit-agent$/m, 'the executable through the current link');
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


t.test('a bad VMKIT_CA_FILE or VMKIT_CP_URLS is refused before anything is downloaded or written', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-install-args-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, 'not-a-cert.pem'), 'hello\n');
  // A well-formed key (no control plane answers for it): the checks below come first.
  const key = `ed25519:${'a'.repeat(32)}:${'A'.repeat(43)}`;
  const env = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    VMKIT_CP_KEY: key,
    VMKIT_INSTALL_SKIP_APT: '1',
    VMKIT_AGENT_PREFIX: join(dir, 'opt'),
    VMKIT_AGENT_CONFIG: join(dir, 'etc', 'agent.json'),
    VMKIT_AGENT_STATE_DIR: join(dir, 'state'),
    VMKIT_AGENT_PIDFILE: join(dir, 'agent.pid'),
  };
  // Port 9 (discard) on loopback: were the script to get as far as a download, it would fail there instead.
  const refused = async (more: Record<string, string>) => {
    const r = await run('bash', [SCRIPT, 'http://127.0.0.1:9', 'vmkenr_x'], { env: { ...env, ...more } }).then(
      (o) => ({ code: 0, stdout: o.stdout, stderr: o.stderr }),
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    t.equal(r.code, 1, 'exit 1');
    t.equal(r.stdout, '', 'nothing started: not a step was announced');
    return r.stderr.trim();
  };
  t.equal(await refused({ VMKIT_CA_FILE: join(dir, 'missing.pem') }), `vmkit-agent install: error: VMKIT_CA_FILE ${join(dir, 'missing.pem')} is not a readable file`);
  t.equal(await refused({ VMKIT_CA_FILE: dir }), `vmkit-agent install: error: VMKIT_CA_FILE ${dir} is not a readable file`, 'a directory is not a CA file');
  t.match(await refused({ VMKIT_CA_FILE: join(dir, 'not-a-cert.pem') }), /^vmkit-agent install: error: VMKIT_CA_FILE .*not-a-cert\.pem holds no PEM certificate/);
  t.equal(await refused({ VMKIT_CP_URLS: 'https://cp-b.example.com ftp://cp-c.example.com' }), 'vmkit-agent install: error: VMKIT_CP_URLS must start with https:// (or http:// for a local control plane): ftp://cp-c.example.com');
  t.match(await refused({ VMKIT_CP_URLS: 'https://cp-b.example.com,https://cp-c.example.com' }), /VMKIT_CP_URLS has a character no control-plane URL needs \(VMKIT_CP_URLS is separated by spaces\)/, 'a comma-separated list is refused, not taken as one URL');
  t.match(await refused({ VMKIT_CP_URLS: Array.from({ length: 8 }, (_, i) => `https://cp-${i}.example.com`).join('\n') }), /9 control-plane URLs given \(URL and VMKIT_CP_URLS\); at most 8/, 'newlines separate too, and the agent\'s limit of 8 holds');
  t.same(readdirSync(dir), ['not-a-cert.pem'], 'no prefix, config, state or pid file');
});
