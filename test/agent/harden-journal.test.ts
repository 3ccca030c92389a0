// The harden journal on fixture roots: a process running the harden runner is
// SIGKILLed at each step boundary (harden-kill-child.ts), then the journal it left is
// recovered as the agent does at start. Before the checks pass the tree comes back
// byte for byte (sshd_config rewritten with a managed block or commented-out Match
// lines included); after them the run is completed and a new run finds nothing to do.
import t from 'tap';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { runHarden } from '../../vmkit-agent/src/executors/harden/index.ts';
import { readHardenJournal } from '../../vmkit-agent/src/executors/harden/journal.ts';
import { recoverHarden } from '../../vmkit-agent/src/executors/harden/recover.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { cannotRunSshd, fixtureRoot, sshdRig, treeState, withoutTimes } from './harden-fixture.ts';

const CHILD = fileURLToPath(new URL('./harden-kill-child.ts', import.meta.url));
const BOUNDARIES = ['journaled', 'ssh_dir', 'authorized_keys', 'keys_checked', 'sshd_config', 'sshd_validated', 'checks_passed', 'finished'];

if (fileNeeds(await cannotRunSshd())) {
  const { hostKey, deployKey, ns } = await sshdRig(t, 'vmkit-harden-journal-');

  /** Runs the runner in a child that SIGKILLs itself at `killAt`; returns the boundaries it passed. */
  const killedRun = (root: string, journalDir: string, killAt: string) =>
    new Promise<{ signal: string | null; boundaries: string[]; stderr: string }>((resolve) => {
      const child = execFile(
        'unshare',
        ['-m', '--propagation', 'private', '--', process.execPath, '--import', 'tsx', CHILD, root, journalDir, hostKey, deployKey, killAt],
        { timeout: 120_000, encoding: 'utf8' },
        (_err, stdout, stderr) => resolve({ signal: child.signalCode, boundaries: [...stdout.matchAll(/^boundary (\S+)$/gm)].map((m) => m[1] ?? ''), stderr }),
      );
    });

  const setup = async (t: { teardown: (fn: () => Promise<void>) => void }, fixture: string) => {
    const fx = await fixtureRoot(fixture);
    t.teardown(fx.cleanup);
    const journalDir = await mkdtemp(join(tmpdir(), 'vmkit-harden-journal-state-'));
    t.teardown(() => rm(journalDir, { recursive: true, force: true }));
    return { fx, journalDir };
  };

  t.test('before the first change the journal holds every path the plan names, 0600', async (t) => {
    const { fx, journalDir } = await setup(t, 'debian-12-cloud-init');
    const run = await killedRun(fx.root, journalDir, 'journaled');
    t.same(run.boundaries, ['journaled'], run.stderr.slice(-2000));
    for (const name of await readdir(journalDir)) t.equal((await stat(join(journalDir, name))).mode & 0o777, 0o600, `${name} is 0600`);
    const found = await readHardenJournal(journalDir);
    if (found.state !== 'found') throw new Error(`journal not found: ${JSON.stringify(found)}`);
    t.equal(found.before.command_id, 'cmd_01testkill0000000000000000', 'it names the command');
    const byPath = new Map(found.before.files.map((f) => [f.path, f]));
    t.equal(byPath.get(join(fx.root, 'etc/ssh/sshd_config.d/00-vmkit-hardening.conf'))?.kind, 'absent', 'the drop-in, absent');
    t.equal(byPath.get(join(fx.root, 'home/kamal/.ssh'))?.kind, 'absent', '~kamal/.ssh, absent');
    t.equal(byPath.get(join(fx.root, 'home/kamal/.ssh/authorized_keys'))?.kind, 'absent', 'authorized_keys, absent');
    t.equal(byPath.get(join(fx.root, 'etc/ssh/sshd_config.d'))?.kind, 'dir', 'the drop-in directory with its mode and owner');
    t.same(found.progress.steps, ['journaled']);
    t.equal(found.progress.checks_passed, false);
  });

  t.test('killed at every boundary: rolled back byte for byte before the checks pass, completed after', async (t) => {
    const seen: string[] = [];
    for (const killAt of BOUNDARIES) {
      const { fx, journalDir } = await setup(t, 'debian-12-cloud-init');
      const before = await treeState(fx.root);
      const run = await killedRun(fx.root, journalDir, killAt);
      t.equal(run.signal, 'SIGKILL', `killed at ${killAt}: ${run.stderr.slice(-1500)}`);
      t.equal(run.boundaries.at(-1), killAt);
      seen.push(...run.boundaries.filter((b) => !seen.includes(b)));
      const found = await readHardenJournal(journalDir);
      if (found.state !== 'found') throw new Error(`no journal after a kill at ${killAt}`);
      const r = await recoverHarden(found, { dir: journalDir, paths: fx.paths, exec: ns.exec, reload: 'skip' });
      const checksPassed = BOUNDARIES.indexOf(killAt) >= BOUNDARIES.indexOf('checks_passed');
      if (!checksPassed) {
        t.equal(r.action, 'rolled_back', `killed at ${killAt}: rolled back`);
        t.equal(r.outcome.error?.key, 'command_interrupted');
        t.match(r.reason, `last step journaled: ${killAt}`);
        t.same(withoutTimes(await treeState(fx.root)), withoutTimes(before), `killed at ${killAt}: every file is as before`);
      } else {
        t.equal(r.action, killAt === 'finished' ? 'finished' : 'completed', `killed at ${killAt}: completed`);
        t.equal(r.outcome.ok, true);
        t.equal((r.outcome.output as { status?: string }).status, 'hardened');
        t.equal((r.outcome.output as { recovery?: { action: string } }).recovery?.action, 'completed');
        const again = await runHarden({ deploy_keys: [deployKey], dry_run: false }, { root: fx.root, manageAccounts: false, reload: 'skip', sshdArgs: ['-h', hostKey], exec: ns.exec });
        t.equal(again.ok && again.output.status, 'already_hardened', `killed at ${killAt}: the VM is fully hardened`);
      }
      t.equal((await readHardenJournal(journalDir)).state, 'found', 'the journal stays until the result is journaled');
      const progress = JSON.parse(await readFile(join(journalDir, 'progress.json'), 'utf8')) as { finished?: unknown };
      t.ok(progress.finished, 'recorded as finished, so a second crash repeats nothing');
    }
    t.same(seen, BOUNDARIES, 'accounts and keys, then their check, then sshd');
  });

  t.test('a recovery killed before it recorded its outcome is simply run again', async (t) => {
    const { fx, journalDir } = await setup(t, 'no-include');
    const before = await treeState(fx.root);
    const run = await killedRun(fx.root, journalDir, 'sshd_validated');
    t.equal(run.signal, 'SIGKILL', run.stderr.slice(-1500));
    const found = await readHardenJournal(journalDir);
    if (found.state !== 'found') throw new Error('no journal');
    const env = { dir: journalDir, paths: fx.paths, exec: ns.exec, reload: 'skip' as const };
    const first = await recoverHarden(found, env);
    t.equal(first.action, 'rolled_back');
    // As if the agent died again right before the outcome was journaled.
    const again = await recoverHarden({ before: found.before, progress: found.progress }, env);
    t.equal(again.action, 'rolled_back', 'the same decision');
    t.same((again.outcome.output as { restored?: string[] }).restored, [], 'nothing left to put back');
    t.same(withoutTimes(await treeState(fx.root)), withoutTimes(before), 'byte for byte');
  });

  for (const fixture of ['no-include', 'match-passwords', 'crlf-odd-case']) {
    t.test(`${fixture}: killed after the sshd files were rewritten, every byte comes back`, async (t) => {
      const { fx, journalDir } = await setup(t, fixture);
      const before = await treeState(fx.root);
      const run = await killedRun(fx.root, journalDir, 'sshd_config');
      t.equal(run.signal, 'SIGKILL', run.stderr.slice(-1500));
      const found = await readHardenJournal(journalDir);
      if (found.state !== 'found') throw new Error('no journal');
      const r = await recoverHarden(found, { dir: journalDir, paths: fx.paths, exec: ns.exec, reload: 'skip' });
      t.equal(r.action, 'rolled_back');
      t.ok((r.outcome.output as { restored?: string[] }).restored?.some((p) => p.includes('/etc/ssh/')), 'an sshd file was put back');
      t.same(withoutTimes(await treeState(fx.root)), withoutTimes(before), 'byte for byte');
    });
  }
}
