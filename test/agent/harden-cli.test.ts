// `vmkit-agent harden --dry-run` prints the plan and changes nothing.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { hardenCli } from '../../vmkit-agent/src/executors/harden/cli.ts';
import { fixtureRoot, makeUserKey, treeState } from './harden-fixture.ts';

const BIN = fileURLToPath(new URL('../../vmkit-agent/bin/vmkit-agent.js', import.meta.url));

function capture() {
  const out = { stdout: '', stderr: '' };
  return { out, io: { stdout: (s: string) => void (out.stdout += s), stderr: (s: string) => void (out.stderr += s) } };
}

t.test('harden --dry-run prints the plan for a fixture tree and changes nothing', async (t) => {
  const fx = await fixtureRoot('ubuntu-22.04-cloud-init');
  t.teardown(fx.cleanup);
  const key = await makeUserKey(fx.root, 'deploy');
  const before = await treeState(fx.root);
  const { out, io } = capture();
  const code = await hardenCli(['--dry-run', '--deploy-key', key, '--root', fx.root], io);
  t.equal(code, 0, out.stderr);
  t.match(out.stdout, /would harden; sshd placement drop-in/);
  t.match(out.stdout, /\[change\] sshd_config/);
  t.match(out.stdout, /00-vmkit-hardening\.conf/);
  t.same(await treeState(fx.root), before, 'nothing touched');
});

t.test('harden --dry-run without any key reports the lockout refusal and exits 1', async (t) => {
  const fx = await fixtureRoot('debian-12');
  t.teardown(fx.cleanup);
  const { out, io } = capture();
  const code = await hardenCli(['--dry-run', '--root', fx.root, '--json'], io);
  t.equal(code, 1);
  const parsed = JSON.parse(out.stdout) as { ok: boolean; error: { key: string } };
  t.equal(parsed.error.key, 'lockout_risk');
});

t.test('harden without --dry-run, or with a malformed key, is a usage error', async (t) => {
  const a = capture();
  t.equal(await hardenCli([], a.io), 2);
  t.match(a.out.stderr, /only --dry-run/);
  const b = capture();
  t.equal(await hardenCli(['--dry-run', '--deploy-key', 'ssh-ed25519 not base64!'], b.io), 2);
  t.match(b.out.stderr, /not one OpenSSH public key line/);
  const c = capture();
  t.equal(await hardenCli(['--dry-run', '--bogus'], c.io), 2);
});

t.test('the vmkit-agent binary dispatches harden --dry-run', async (t) => {
  const fx = await fixtureRoot('no-include');
  t.teardown(fx.cleanup);
  const dir = await mkdtemp(join(tmpdir(), 'vmkit-harden-cli-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const key = await makeUserKey(dir, 'deploy');
  const r = await new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
    execFile(process.execPath, [BIN, 'harden', '--dry-run', '--root', fx.root, '--deploy-key', key], { timeout: 60_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    ),
  );
  t.equal(r.code, 0, r.stderr);
  t.match(r.stdout, /sshd placement managed-block/);
});
