// The harden executor against stock sshd_config trees, judged by the real sshd binary
// (-t and -T -C) inside a mount namespace; accounts are not touched here.
import t from 'tap';
import { appendFile, chmod, chown, mkdir, mkdtemp, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runHarden } from '../../vmkit-agent/src/executors/harden/index.ts';
import type { HardenEnv, HardenProgress } from '../../vmkit-agent/src/executors/harden/index.ts';
import type { ExecFn } from '../../vmkit-agent/src/executors/harden/exec.ts';
import {
  FIXTURE_NAMES,
  KAMAL_UID,
  SSHD,
  cannotRunSshd,
  fixtureRoot,
  makeHostKey,
  makeUserKey,
  sshdNamespace,
  treeState,
  withoutTimes,
} from './harden-fixture.ts';
import type { FixtureRoot, SshdNamespace } from './harden-fixture.ts';
import { fileNeeds } from '../helpers/prereq.ts';

if (fileNeeds(await cannotRunSshd())) await main();

async function main(): Promise<void> {
  const keysDir = await mkdtemp(join(tmpdir(), 'vmkit-harden-keys-'));
  const hostKey = await makeHostKey(keysDir);
  const deployKey = await makeUserKey(keysDir, 'deploy');
  const otherKey = await makeUserKey(keysDir, 'laptop');
  const ns: SshdNamespace = await sshdNamespace();
  t.teardown(async () => {
    await ns.close();
    await rm(keysDir, { recursive: true, force: true });
  });

  const envFor = (fx: FixtureRoot, exec: ExecFn = ns.exec): HardenEnv => ({ root: fx.root, manageAccounts: false, sshdArgs: ['-h', hostKey], exec });
  const fixture = async (tt: { teardown: (fn: () => Promise<void>) => void }, name: string, opts?: { kamal?: boolean }) => {
    const fx = await fixtureRoot(name, opts);
    tt.teardown(fx.cleanup);
    return fx;
  };
  /** The effective values the real sshd prints for a user, from any address. */
  const effectiveFor = async (fx: FixtureRoot, user: string, addr = '127.0.0.1') => {
    const r = await ns.exec(SSHD, ['-T', '-f', fx.paths.sshdConfig, '-h', hostKey, '-C', `user=${user},host=localhost,addr=${addr}`]);
    if (r.code !== 0) throw new Error(`sshd -T failed: ${r.stderr}`);
    const pick = (k: string) => new RegExp(`^${k} (.*)$`, 'm').exec(r.stdout)?.[1];
    return { permitrootlogin: pick('permitrootlogin'), passwordauthentication: pick('passwordauthentication'), kbdinteractiveauthentication: pick('kbdinteractiveauthentication') };
  };
  const HARD = { permitrootlogin: 'no', passwordauthentication: 'no', kbdinteractiveauthentication: 'no' };

  for (const name of FIXTURE_NAMES) {
    t.test(`${name}: after hardening sshd refuses root and passwords for everyone, and a second run touches nothing`, async (t) => {
      const fx = await fixture(t, name);
      const before = await effectiveFor(fx, 'root', '10.1.2.3');
      t.not(JSON.stringify(before), JSON.stringify(HARD), 'the stock config is not hardened yet');

      const steps: HardenProgress[] = [];
      const first = await runHarden({ deploy_keys: [deployKey], dry_run: false }, envFor(fx), (p) => steps.push(p));
      t.ok(first.ok, first.ok ? 'hardened' : JSON.stringify(first.error));
      if (!first.ok) return;
      t.equal(first.output.status, 'hardened');
      t.ok(steps.some((s) => s.step === 'sshd_effective' && s.state === 'done'), 'progress was reported');
      for (const user of ['root', 'kamal', 'deploy']) {
        for (const addr of ['127.0.0.1', '10.1.2.3', '192.168.1.5']) {
          t.same(await effectiveFor(fx, user, addr), HARD, `sshd -T for user=${user} from ${addr}`);
        }
      }
      const keys = join(fx.root, 'home/kamal/.ssh/authorized_keys');
      t.equal(await readFile(keys, 'utf8'), deployKey + '\n', 'the deploy key is installed');
      const ks = await stat(keys);
      t.equal(ks.mode & 0o777, 0o600);
      t.equal(ks.uid, KAMAL_UID);
      t.equal((await stat(join(fx.root, 'home/kamal/.ssh'))).mode & 0o777, 0o700);

      const settled = await treeState(fx.root);
      const second = await runHarden({ deploy_keys: [deployKey], dry_run: false }, envFor(fx));
      t.ok(second.ok && second.output.status === 'already_hardened', 'second run is already_hardened');
      t.ok(second.ok && second.output.steps.every((s) => !s.changed), 'no step changed');
      t.same(await treeState(fx.root), settled, 'no file written: bytes, modes, owners and mtimes unchanged');
    });
  }

  t.test('the drop-in sorts first in sshd_config.d and the stock main file is left alone', async (t) => {
    const fx = await fixture(t, 'ubuntu-22.04-cloud-init');
    const main = await readFile(fx.paths.sshdConfig);
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, envFor(fx));
    t.ok(r.ok && r.output.placement === 'drop-in');
    t.same(await readFile(fx.paths.sshdConfig), main, 'sshd_config byte-identical');
    const dropIn = await readFile(join(fx.root, 'etc/ssh/sshd_config.d/00-vmkit-hardening.conf'), 'utf8');
    t.match(dropIn, /^PasswordAuthentication no$/m);
    t.equal(await readFile(join(fx.root, 'etc/ssh/sshd_config.d/50-cloud-init.conf'), 'utf8'), 'PasswordAuthentication yes\n', "cloud-init's drop-in is not edited");
  });

  t.test('a config whose Include comes after a conflicting value gets a managed block on top, keeping CRLF', async (t) => {
    const fx = await fixture(t, 'crlf-odd-case');
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, envFor(fx));
    t.ok(r.ok && r.output.placement === 'managed-block');
    const text = await readFile(fx.paths.sshdConfig, 'utf8');
    t.ok(text.startsWith('# BEGIN vmkit-hardening'), 'block at the very top');
    t.notOk(/[^\r]\n/.test(text), 'every line still ends in CRLF');
    t.match(text, /^ {2}passwordauthentication {3}YES {2}\r$/m, 'the later odd line is kept as it was');
  });

  t.test('Match blocks that allow passwords or root are commented out with a marker', async (t) => {
    const fx = await fixture(t, 'match-passwords');
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, envFor(fx));
    t.ok(r.ok);
    const text = await readFile(fx.paths.sshdConfig, 'utf8');
    t.match(text, /^\t# vmkit-hardening disabled: PasswordAuthentication yes$/m);
    t.match(text, /^\t# vmkit-hardening disabled: PermitRootLogin yes$/m);
    t.match(text, /^\t# vmkit-hardening disabled: KbdInteractiveAuthentication yes$/m);
    const admins = await readFile(join(fx.root, 'etc/ssh/sshd_config.d/70-admins.conf'), 'utf8');
    t.match(admins, /# vmkit-hardening disabled: PermitRootLogin prohibit-password/);
    t.match(admins, /^ {4}PasswordAuthentication no$/m, 'a Match line that already says no is kept');
  });

  t.test('existing valid keys are kept and only missing deploy keys are added', async (t) => {
    const fx = await fixture(t, 'debian-12');
    const dir = join(fx.root, 'home/kamal/.ssh');
    await mkdir(dir);
    await chown(dir, KAMAL_UID, KAMAL_UID);
    await chmod(dir, 0o755);
    const existing = `# the owner's laptop\nfrom="10.0.0.0/8" ${otherKey}\n${deployKey}\n`;
    await writeFile(join(dir, 'authorized_keys'), existing, { mode: 0o644 });
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, envFor(fx));
    t.ok(r.ok);
    t.equal(await readFile(join(dir, 'authorized_keys'), 'utf8'), existing, 'content unchanged: the deploy key was already there');
    t.equal((await stat(join(dir, 'authorized_keys'))).mode & 0o777, 0o600, 'mode tightened');
    t.equal((await stat(join(dir, 'authorized_keys'))).uid, KAMAL_UID, 'owned by kamal');
    t.equal((await stat(dir)).mode & 0o777, 0o700, '.ssh tightened');
  });

  t.test('an existing key for kamal is enough when no deploy key is given', async (t) => {
    const fx = await fixture(t, 'debian-12');
    const dir = join(fx.root, 'home/kamal/.ssh');
    await mkdir(dir, { mode: 0o700 });
    await chown(dir, KAMAL_UID, KAMAL_UID);
    await writeFile(join(dir, 'authorized_keys'), otherKey + '\n', { mode: 0o600 });
    await chown(join(dir, 'authorized_keys'), KAMAL_UID, KAMAL_UID);
    const r = await runHarden({ deploy_keys: [], dry_run: false }, envFor(fx));
    t.ok(r.ok && r.output.status === 'hardened', r.ok ? '' : JSON.stringify(r.error));
  });

  for (const name of ['debian-12-cloud-init', 'no-include', 'match-passwords']) {
    t.test(`${name}: a sabotaged included file fails sshd -t and every file is restored byte-identical`, async (t) => {
      const fx = await fixture(t, name);
      const target = name === 'no-include' ? fx.paths.sshdConfig : join(fx.root, 'etc/ssh/sshd_config.d/50-cloud-init.conf');
      await appendFile(target, 'NoSuchKeyword yes\n');
      const before = await treeState(fx.root);
      const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, envFor(fx));
      t.notOk(r.ok);
      if (r.ok) return;
      t.equal(r.error.key, 'sshd_validation_failed');
      t.match(r.error.message, /NoSuchKeyword/, 'the message carries sshd -t');
      t.equal(r.output.failed_check, 'sshd -t');
      t.ok((r.output.restored ?? []).length > 0, 'restored paths are listed');
      t.same(withoutTimes(await treeState(fx.root)), withoutTimes(before), 'every file byte-identical, same modes and owners, nothing left behind');
      t.notOk((await stat(join(fx.root, 'home/kamal/.ssh')).catch(() => null)), 'no key was installed');
    });
  }

  t.test('when sshd -T shows the settings are not in effect, the files are restored and the check is named', async (t) => {
    const fx = await fixture(t, 'debian-12-cloud-init');
    // An sshd that accepts the config but reports passwords still on (as a Match we
    // could not see would): the runner must trust sshd over its own model.
    const lying: ExecFn = async (file, args, opts) => {
      const r = await ns.exec(file, args, opts);
      return args[0] === '-T' && args.some((a) => a.startsWith('user=kamal'))
        ? { ...r, stdout: r.stdout.replace('passwordauthentication no', 'passwordauthentication yes') }
        : r;
    };
    const before = await treeState(fx.root);
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, envFor(fx, lying));
    t.notOk(r.ok);
    if (r.ok) return;
    t.equal(r.error.key, 'sshd_effective_check_failed');
    t.match(r.error.message, /user=kamal: passwordauthentication yes/);
    t.same(withoutTimes(await treeState(fx.root)), withoutTimes(before));
  });

  t.test('no deploy key and none present for kamal: lockout_risk and nothing changed', async (t) => {
    const fx = await fixture(t, 'debian-12-cloud-init');
    const before = await treeState(fx.root);
    const r = await runHarden({ deploy_keys: [], dry_run: false }, envFor(fx));
    t.notOk(r.ok);
    if (r.ok) return;
    t.equal(r.error.key, 'lockout_risk');
    t.match(r.error.message, /no deploy key/);
    t.same(await treeState(fx.root), before, 'nothing touched, mtimes included');
  });

  t.test('AllowUsers that excludes kamal: lockout_risk and nothing changed', async (t) => {
    const fx = await fixture(t, 'debian-12');
    await appendFile(fx.paths.sshdConfig, 'AllowUsers root admin@10.0.0.1\n');
    const before = await treeState(fx.root);
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, envFor(fx));
    t.notOk(r.ok);
    if (r.ok) return;
    t.equal(r.error.key, 'lockout_risk');
    t.match(r.error.message, /AllowUsers/);
    t.same(await treeState(fx.root), before);
  });

  t.test('a Match block that turns off public keys for kamal: lockout_risk', async (t) => {
    const fx = await fixture(t, 'debian-12');
    await appendFile(fx.paths.sshdConfig, 'Match User kamal\n\tPubkeyAuthentication no\n');
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, envFor(fx));
    t.ok(!r.ok && r.error.key === 'lockout_risk' && /PubkeyAuthentication no/.test(r.error.message));
  });

  t.test('a symlinked ~kamal/.ssh is refused, nothing followed or changed', async (t) => {
    const fx = await fixture(t, 'debian-12');
    await mkdir(join(fx.root, 'elsewhere'));
    await symlink(join(fx.root, 'elsewhere'), join(fx.root, 'home/kamal/.ssh'));
    const before = await treeState(fx.root);
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, envFor(fx));
    t.ok(!r.ok && r.error.key === 'command_failed' && /symlink/.test(r.error.message), r.ok ? 'succeeded?' : r.error.message);
    t.same(await treeState(fx.root), before);
  });

  t.test('a dry run reports the plan and changes nothing', async (t) => {
    const fx = await fixture(t, 'ubuntu-24.04-cloud-init');
    const before = await treeState(fx.root);
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: true }, envFor(fx));
    t.ok(r.ok);
    if (!r.ok) return;
    t.equal(r.output.dry_run, true);
    t.equal(r.output.status, 'hardened', 'it would harden');
    t.ok(r.output.steps.every((s) => !s.changed), 'nothing reported as changed');
    t.match(r.output.steps.find((s) => s.step === 'sshd_config')?.detail, /would change/);
    t.same(await treeState(fx.root), before);
  });
}
