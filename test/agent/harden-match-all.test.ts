// `Match all` applies to every connection: hardening must treat it as a Match block
// (comment out what re-enables passwords or root), judged by the real sshd.
import t from 'tap';
import { readFile } from 'node:fs/promises';
import { runHarden } from '../../vmkit-agent/src/executors/harden/index.ts';
import type { HardenEnv } from '../../vmkit-agent/src/executors/harden/index.ts';
import { SSHD, cannotRunSshd, fixtureRoot, sshdRig, treeState, withoutTimes } from './harden-fixture.ts';
import type { FixtureRoot } from './harden-fixture.ts';
import { fileNeeds } from '../helpers/prereq.ts';

if (fileNeeds(await cannotRunSshd())) await main();

async function main(): Promise<void> {
  const { hostKey, deployKey, ns } = await sshdRig(t, 'vmkit-harden-matchall-');
  const envFor = (fx: FixtureRoot): HardenEnv => ({ root: fx.root, manageAccounts: false, sshdArgs: ['-h', hostKey], exec: ns.exec });
  const passwordsFor = async (fx: FixtureRoot, user: string, addr: string): Promise<string | undefined> => {
    const r = await ns.exec(SSHD, ['-T', '-f', fx.paths.sshdConfig, '-h', hostKey, '-C', `user=${user},host=somewhere,addr=${addr}`]);
    if (r.code !== 0) throw new Error(`sshd -T failed: ${r.stderr}`);
    return /^passwordauthentication (.*)$/m.exec(r.stdout)?.[1];
  };

  t.test('a Match all block that turns passwords back on is commented out, and the VM ends hardened', async (t) => {
    const fx = await fixtureRoot('match-all');
    t.teardown(fx.cleanup);
    t.equal(await passwordsFor(fx, 'kamal', '203.0.113.9'), 'yes', 'before: sshd allows passwords for every connection');

    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, envFor(fx));
    t.ok(r.ok, r.ok ? 'hardened' : JSON.stringify(r.error));
    if (!r.ok) return;
    t.equal(r.output.status, 'hardened');
    t.match(r.output.steps.find((s) => s.step === 'sshd_config')?.detail, /Match lines commented out: .*sshd_config:\d+: PasswordAuthentication yes/);
    const text = await readFile(fx.paths.sshdConfig, 'utf8');
    t.match(text, /^Match all\n {4}# vmkit-hardening disabled: PasswordAuthentication yes\n$/m, 'the line stays visible behind the marker');
    for (const user of ['root', 'kamal', 'someone']) {
      for (const addr of ['127.0.0.1', '203.0.113.9']) t.equal(await passwordsFor(fx, user, addr), 'no', `sshd -T for user=${user} from ${addr}`);
    }

    const settled = await treeState(fx.root);
    const again = await runHarden({ deploy_keys: [deployKey], dry_run: false }, envFor(fx));
    t.ok(again.ok && again.output.status === 'already_hardened', 'a second run is already_hardened');
    t.same(await treeState(fx.root), settled, 'and writes nothing');
  });

  t.test('when a later check fails, the Match all line is restored byte for byte', async (t) => {
    const fx = await fixtureRoot('match-all');
    t.teardown(fx.cleanup);
    const before = await treeState(fx.root);
    // An sshd that accepts the files but still reports passwords on (as if another Match hid them).
    const lying: HardenEnv['exec'] = async (file, args, opts) => {
      const res = await ns.exec(file, args, opts);
      return args[0] === '-T' ? { ...res, stdout: res.stdout.replace('passwordauthentication no', 'passwordauthentication yes') } : res;
    };
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, { ...envFor(fx), exec: lying });
    t.notOk(r.ok);
    if (r.ok) return;
    t.equal(r.error.key, 'sshd_effective_check_failed');
    t.same(withoutTimes(await treeState(fx.root)), withoutTimes(before), 'sshd_config holds its Match all block again, unchanged');
  });
}
