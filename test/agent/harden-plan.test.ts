// The harden planner is pure: these tests feed it fixture trees and snapshots in memory.
import t from 'tap';
import { readFileSync, readdirSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { planHarden } from '../../vmkit-agent/src/executors/harden/plan.ts';
import { planSshd, treeIsHardened, DROP_IN_NAME } from '../../vmkit-agent/src/executors/harden/sshd-plan.ts';
import { flatten, globMatches, parseDirective, splitLines, joinLines } from '../../vmkit-agent/src/executors/harden/sshd-config.ts';
import type { ConfigTree } from '../../vmkit-agent/src/executors/harden/sshd-config.ts';
import { lockoutReason, parseEffective } from '../../vmkit-agent/src/executors/harden/lockout.ts';
import type { LockoutInput } from '../../vmkit-agent/src/executors/harden/lockout.ts';
import { mergeAuthorizedKeys, parseKeyLine } from '../../vmkit-agent/src/executors/harden/authorized-keys.ts';
import { defaultPaths } from '../../vmkit-agent/src/executors/harden/types.ts';
import type { FileStat, SystemSnapshot } from '../../vmkit-agent/src/executors/harden/types.ts';
import { FIXTURES, FIXTURE_NAMES } from './harden-fixture.ts';

// Real key lines (the blob names its own type, which the parser checks).
const ED = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHn0Jb3bK0JxUeMtcGqJ1z0qB1pEw0PpF1nq6kq2mXWq deploy@vmkit';
const ED2 = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK8r4oQ2T0Jm4d3a1Y7PqXoCq3o8bQmK1m0mJ4d0xYzA laptop';

/** A fixture as the planner sees it: system paths (/etc/ssh/...), glob results sorted by bytes. */
function treeOf(name: string, extra: Record<string, string> = {}, mainEdit: (s: string) => string = (s) => s): ConfigTree {
  const dir = join(FIXTURES, name, 'etc/ssh');
  const files = new Map<string, string>();
  files.set('/etc/ssh/sshd_config', mainEdit(readFileSync(join(dir, 'sshd_config'), 'latin1')));
  const dropins = existsSync(join(dir, 'sshd_config.d')) ? readdirSync(join(dir, 'sshd_config.d')).filter((f) => f.endsWith('.conf')) : [];
  for (const f of dropins) files.set(`/etc/ssh/sshd_config.d/${f}`, readFileSync(join(dir, 'sshd_config.d', f), 'latin1'));
  for (const [f, c] of Object.entries(extra)) files.set(`/etc/ssh/sshd_config.d/${f}`, c);
  const listed = [...files.keys()].filter((p) => p.startsWith('/etc/ssh/sshd_config.d/')).sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
  return { main: '/etc/ssh/sshd_config', sshDir: '/etc/ssh', files, globs: new Map([['/etc/ssh/sshd_config.d/*.conf', listed]]) };
}

function applyWrites(tree: ConfigTree, writes: { path: string; content: string }[]): ConfigTree {
  const files = new Map(tree.files);
  const globs = new Map(tree.globs);
  for (const w of writes) {
    files.set(w.path, w.content);
    if (w.path.startsWith('/etc/ssh/sshd_config.d/')) {
      const list = [...new Set([...(globs.get('/etc/ssh/sshd_config.d/*.conf') ?? []), w.path])].sort();
      globs.set('/etc/ssh/sshd_config.d/*.conf', list);
    }
  }
  return { ...tree, files, globs };
}

const EXPECTED_PLACEMENT: Record<string, string> = {
  'no-include': 'managed-block',
  'prohibit-password': 'managed-block',
  'crlf-odd-case': 'managed-block',
};

t.test('every fixture gets a placement that wins, and planning again after applying it changes nothing', async (t) => {
  for (const name of FIXTURE_NAMES) {
    const tree = treeOf(name);
    t.notOk(treeIsHardened(tree), `${name}: stock is not hardened`);
    const plan = planSshd(tree);
    t.same(plan.problems, [], `${name}: no problems`);
    t.equal(plan.placement, EXPECTED_PLACEMENT[name] ?? 'drop-in', `${name}: placement`);
    t.ok(plan.changed, `${name}: changes planned`);
    t.match(plan.after, /permitrootlogin no, passwordauthentication no, kbdinteractiveauthentication no$/, `${name}: after`);
    const next = applyWrites(tree, plan.writes);
    t.ok(treeIsHardened(next), `${name}: hardened once applied`);
    const again = planSshd(next);
    t.notOk(again.changed, `${name}: second plan changes nothing`);
    t.equal(again.placement, plan.placement, `${name}: placement recognised on the second run`);
  }
});

t.test('the stock Debian 12 tree gets a drop-in named to sort before cloud-init', async (t) => {
  const plan = planSshd(treeOf('debian-12-cloud-init'));
  t.same(plan.writes.map((w) => w.path), [`/etc/ssh/sshd_config.d/${DROP_IN_NAME}`]);
  t.ok(plan.writes[0]?.create);
  t.match(plan.before, /passwordauthentication yes/);
});

t.test('a drop-in that would sort after a conflicting one falls back to the managed block', async (t) => {
  // "0.conf" sorts before "00-vmkit-hardening.conf" ('.' < '0').
  const plan = planSshd(treeOf('debian-12', { '0.conf': 'PasswordAuthentication yes\n' }));
  t.equal(plan.placement, 'managed-block');
});

t.test('an Include inside a Match block is not used for the drop-in', async (t) => {
  const plan = planSshd(
    treeOf('no-include', {}, (s) => s + '\nMatch User nobody\nInclude /etc/ssh/sshd_config.d/*.conf\n'),
  );
  t.equal(plan.placement, 'managed-block');
});

t.test('the managed block uses the file’s CRLF endings and an old block is replaced, not duplicated', async (t) => {
  const tree = treeOf('crlf-odd-case');
  const plan = planSshd(tree);
  const main = plan.writes.find((w) => w.path === '/etc/ssh/sshd_config')?.content ?? '';
  t.ok(main.startsWith('# BEGIN vmkit-hardening'));
  t.notOk(/[^\r]\n/.test(main), 'CRLF everywhere');
  // A block that no longer wins (a hand edit put a value above it) is moved back to the top.
  const stale = applyWrites(tree, [{ path: '/etc/ssh/sshd_config', content: 'PasswordAuthentication yes\r\n' + main }]);
  const moved = planSshd(stale).writes.find((w) => w.path === '/etc/ssh/sshd_config')?.content ?? '';
  t.equal(moved.split('# BEGIN vmkit-hardening').length, 2, 'exactly one block');
  t.ok(moved.startsWith('# BEGIN vmkit-hardening'));
});

t.test('Match lines that re-enable root or passwords are commented out, in the main file and in includes', async (t) => {
  const plan = planSshd(treeOf('match-passwords'));
  t.equal(plan.neutralised.length, 5);
  t.match(plan.before, /Match Address 10\.0\.0\.0\/8,192\.168\.0\.0\/16: yes/);
  const next = applyWrites(treeOf('match-passwords'), plan.writes);
  const inMatch = flatten(next).directives.filter((d) => d.match !== null && ['passwordauthentication', 'permitrootlogin', 'kbdinteractiveauthentication'].includes(d.keyword));
  t.same(inMatch.map((d) => `${d.keyword} ${d.args.join(' ')}`), ['passwordauthentication no'], 'only the harmless Match line is left');
});

t.test('sshd_config lines parse as sshd reads them', async (t) => {
  t.same(parseDirective('  passwordauthentication   YES  \r'), { keyword: 'passwordauthentication', args: ['YES'] });
  t.same(parseDirective('\tPERMITROOTLOGIN=yes'), { keyword: 'permitrootlogin', args: ['yes'] });
  t.same(parseDirective('KbdInteractiveAuthentication = no'), { keyword: 'kbdinteractiveauthentication', args: ['no'] });
  t.same(parseDirective('AllowUsers "a b" c # trailing'), { keyword: 'allowusers', args: ['a b', 'c'] });
  t.equal(parseDirective('   # PermitRootLogin yes'), null);
  t.equal(parseDirective(''), null);
  const text = 'a\r\nb\nc';
  t.equal(joinLines(splitLines(text)), text, 'lines round-trip byte for byte');
  t.ok(globMatches('/etc/ssh/sshd_config.d/*.conf', `/etc/ssh/sshd_config.d/${DROP_IN_NAME}`));
  t.notOk(globMatches('/etc/ssh/sshd_config.d/*.conf', '/etc/ssh/sshd_config.d/.hidden.conf'), 'a leading dot needs an explicit dot');
  t.notOk(globMatches('/etc/ssh/sshd_config.d/*.conf', '/etc/ssh/sshd_config.d/x.conf.bak'));
});

t.test('authorized_keys keeps what is there and adds only missing valid deploy keys', async (t) => {
  const existing = `# laptop\nfrom="10.0.0.0/8",no-pty ${ED2}\n${ED}`;
  const m = mergeAuthorizedKeys(existing, [ED, 'ssh-ed25519 AAAAnotakey x', ED2]);
  t.equal(m.content, existing, 'nothing to add: both keys are present (one with options)');
  t.equal(m.added, 0);
  t.equal(m.rejected, 1, 'garbage is not installed');
  t.equal(m.total, 2);
  const fresh = mergeAuthorizedKeys(null, [ED, ED]);
  t.equal(fresh.content, ED + '\n', 'duplicates collapse');
  t.same(parseKeyLine(`no-agent-forwarding ${ED}`), { type: 'ssh-ed25519', blob: ED.split(' ')[1] });
  t.equal(parseKeyLine('ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIHn0Jb3bK0JxUeMtcGqJ1z0qB1pEw0PpF1nq6kq2mXWq'), null, 'a blob of another type is refused');
});

const effective = (extra: string) =>
  parseEffective(`usepam yes\npubkeyauthentication yes\nauthorizedkeysfile .ssh/authorized_keys .ssh/authorized_keys2\n${extra}`);
const guard = (over: Partial<LockoutInput>) =>
  lockoutReason({ user: 'kamal', home: '/home/kamal', groups: ['kamal', 'docker'], shellUsable: true, keysAfter: 1, effective: effective(''), ...over });

t.test('the lockout guard names why kamal could not log in', async (t) => {
  t.equal(guard({}), null, 'stock settings let kamal in');
  t.match(guard({ keysAfter: 0 }), /no deploy key/);
  t.match(guard({ shellUsable: false }), /shell/);
  t.match(guard({ effective: effective('allowusers root\nallowusers admin@10.0.0.1') }), /AllowUsers/);
  t.equal(guard({ effective: effective('allowusers root\nallowusers kam*@10.0.0.0/8') }), null, 'a wildcard entry for kamal allows');
  t.match(guard({ effective: effective('denyusers k?mal') }), /DenyUsers/);
  t.match(guard({ effective: effective('allowgroups admins sudo') }), /AllowGroups/);
  t.equal(guard({ effective: effective('allowgroups docker') }), null, 'kamal will be in docker');
  t.match(guard({ effective: effective('denygroups docker') }), /DenyGroups/);
  t.match(guard({ effective: parseEffective('pubkeyauthentication no\nauthorizedkeysfile .ssh/authorized_keys') }), /PubkeyAuthentication no/);
  t.match(guard({ effective: parseEffective('pubkeyauthentication yes\nauthorizedkeysfile /etc/ssh/keys/%u') }), /AuthorizedKeysFile/);
  t.equal(guard({ effective: parseEffective('pubkeyauthentication yes\nauthorizedkeysfile /home/%u/.ssh/authorized_keys') }), null);
  t.equal(guard({ effective: parseEffective('pubkeyauthentication yes\nauthorizedkeysfile %h/.ssh/authorized_keys') }), null);
  t.match(guard({ effective: effective('authenticationmethods publickey,password') }), /AuthenticationMethods/);
  t.equal(guard({ effective: effective('authenticationmethods publickey,password publickey') }), null);
});

const dirStat = (mode: number, uid = 0, gid = 0): FileStat => ({ kind: 'dir', mode, uid, gid });

function snapshot(over: Partial<SystemSnapshot> = {}): SystemSnapshot {
  return {
    paths: defaultPaths('/'),
    passwd: 'root:x:0:0:root:/root:/bin/bash\n',
    group: 'root:x:0:\n',
    shadow: null,
    sshd: treeOf('debian-12'),
    sshdStats: new Map(),
    kamal: {
      sshDir: '/home/kamal/.ssh',
      sshDirStat: null,
      authorizedKeysPath: '/home/kamal/.ssh/authorized_keys',
      authorizedKeysStat: null,
      authorizedKeys: null,
      homeStat: null,
    },
    docker: { socketStat: null, daemonInstalled: false },
    shellUsable: true,
    effectiveKamal: effective(''),
    ...over,
  };
}

t.test('on a fresh VM the plan creates group docker and user kamal with useradd, never a shell string', async (t) => {
  const plan = planHarden(snapshot(), { deployKeys: [ED], manageAccounts: true });
  t.equal(plan.lockout, null);
  const group = plan.steps.find((s) => s.step === 'group_docker');
  t.same(group?.actions, [{ kind: 'exec', file: 'groupadd', args: ['--system', 'docker'] }]);
  const user = plan.steps.find((s) => s.step === 'user_kamal');
  t.same(user?.actions, [
    { kind: 'exec', file: 'useradd', args: ['--create-home', '--home-dir', '/home/kamal', '--shell', '/bin/bash', '--user-group', '--groups', 'docker', 'kamal'] },
  ]);
  t.equal(plan.steps.find((s) => s.step === 'docker_socket')?.detail, 'docker: not_installed');
  t.ok(plan.changed);
});

t.test('an existing kamal is fixed up with usermod, not recreated', async (t) => {
  const plan = planHarden(
    snapshot({
      passwd: 'kamal:x:1000:1000::/home/kamal:/usr/sbin/nologin\n',
      group: 'kamal:x:1000:\ndocker:x:999:\n',
      kamal: { ...snapshot().kamal, homeStat: dirStat(0o750, 1000, 1000) },
    }),
    { deployKeys: [ED], manageAccounts: true },
  );
  const user = plan.steps.find((s) => s.step === 'user_kamal');
  t.same(user?.actions, [{ kind: 'exec', file: 'usermod', args: ['--shell', '/bin/bash', '--append', '--groups', 'docker', 'kamal'] }]);
  t.notOk(plan.steps.find((s) => s.step === 'group_docker')?.changed, 'docker exists');
});

t.test('without PAM a locked kamal gets a non-locking "*" password so sshd accepts its key', async (t) => {
  const plan = planHarden(
    snapshot({
      passwd: 'kamal:x:1000:1000::/home/kamal:/bin/bash\n',
      group: 'kamal:x:1000:\ndocker:x:999:kamal\n',
      shadow: 'kamal:!:19000:0:99999:7:::\n',
      effectiveKamal: parseEffective('usepam no\npubkeyauthentication yes\nauthorizedkeysfile .ssh/authorized_keys'),
      kamal: { ...snapshot().kamal, homeStat: dirStat(0o750, 1000, 1000) },
    }),
    { deployKeys: [ED], manageAccounts: true },
  );
  t.same(plan.steps.find((s) => s.step === 'user_kamal')?.actions, [{ kind: 'exec', file: 'usermod', args: ['--password', '*', 'kamal'] }]);
});

t.test('a docker socket not owned by group docker is handed to it', async (t) => {
  const plan = planHarden(
    snapshot({ group: 'docker:x:999:\n', docker: { socketStat: { kind: 'socket', mode: 0o600, uid: 0, gid: 0 }, daemonInstalled: true } }),
    { deployKeys: [ED], manageAccounts: true },
  );
  const step = plan.steps.find((s) => s.step === 'docker_socket');
  t.ok(step?.changed);
  t.same(step?.actions, [
    { kind: 'chown', path: '/run/docker.sock', owner: { user: '#0', group: 'docker' } },
    { kind: 'chmod', path: '/run/docker.sock', mode: 0o660 },
  ]);
});

t.test('a symlinked ~kamal/.ssh is refused instead of followed', async (t) => {
  const plan = planHarden(snapshot({ kamal: { ...snapshot().kamal, sshDirStat: { kind: 'symlink', mode: 0o777, uid: 1000, gid: 1000 } } }), {
    deployKeys: [ED],
    manageAccounts: true,
  });
  t.match(plan.problems.join(' '), /symlink/);
});

t.test('no key anywhere is a lockout risk in the plan', async (t) => {
  const plan = planHarden(snapshot(), { deployKeys: [], manageAccounts: true });
  t.match(plan.lockout, /no deploy key/);
});
