import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
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

