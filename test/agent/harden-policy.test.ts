// The SSH policy (crypto, forwarding, login limits): its pieces in memory, then the
// harden runner on fixture trees judged by the real sshd.
import t from 'tap';
import { appendFile, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execTool } from '../../vmkit-agent/src/executors/harden/exec.ts';
import { runHarden } from '../../vmkit-agent/src/executors/harden/index.ts';
import type { HardenEnv } from '../../vmkit-agent/src/executors/harden/index.ts';
import { hostKeyType, rulesFor, seconds, strongModuli } from '../../vmkit-agent/src/executors/harden/ssh-policy.ts';
import { planSshd } from '../../vmkit-agent/src/executors/harden/sshd-plan.ts';
import type { ConfigTree } from '../../vmkit-agent/src/executors/harden/sshd-config.ts';
import { SSHD, cannotRunSshd, fixtureRoot, makeHostKey, makeUserKey, sshdNamespace, treeState, withoutTimes } from './harden-fixture.ts';
import type { FixtureRoot, SshdNamespace } from './harden-fixture.ts';

/** One /etc/ssh/moduli line; the size column is the prime's bits minus one. */
const modulus = (bits: number) => `20230101000000 2 6 100 ${bits - 1} 2 ${'F'.repeat(Math.ceil(bits / 4))}\n`;
const MODULI = '#    $OpenBSD: moduli,v 1.33 2023/01/01 $\n# Time Type Tests Tries Size Generator Modulus\n' + modulus(2048) + modulus(3072) + modulus(4096) + modulus(2048) + modulus(8192);

const tree = (main: string, dropIns: Record<string, string> = {}): ConfigTree => {
  const files = new Map<string, string>([['/etc/ssh/sshd_config', main]]);
  for (const [name, content] of Object.entries(dropIns)) files.set(`/etc/ssh/sshd_config.d/${name}`, content);
  const listed = [...files.keys()].filter((p) => p.includes('sshd_config.d/')).sort();
  return { main: '/etc/ssh/sshd_config', sshDir: '/etc/ssh', files, globs: new Map([['/etc/ssh/sshd_config.d/*.conf', listed]]) };
};
const STOCK = 'Include /etc/ssh/sshd_config.d/*.conf\nKbdInteractiveAuthentication no\nUsePAM yes\nX11Forwarding yes\n';

t.test('login grace times are read as sshd reads them', async (t) => {
  t.equal(seconds('30'), 30);
  t.equal(seconds('1m30s'), 90);
  t.equal(seconds('2M'), 120);
  t.equal(seconds('30q'), null);
  t.equal(seconds(''), null);
  const rule = rulesFor(true).find((r) => r.keyword === 'logingracetime');
  t.ok(rule?.holds('30') && rule.holds('20') && !rule.holds('120') && !rule.holds('0'), '0 (no limit) and 2 minutes do not pass; 20 s does');
});

t.test('moduli under 3072 bits are dropped, comments and strong primes kept byte for byte', async (t) => {
  const r = strongModuli(MODULI);
  t.equal(r?.kept, 3);
  t.equal(r?.dropped, 2);
  t.equal(r?.content, MODULI.split(modulus(2048)).join(''), 'only the two 2048-bit lines are gone');
  t.equal(strongModuli(modulus(2048) + modulus(1536)), null, 'a file with no strong prime is left alone');
});

t.test('host key types are read from OpenSSH and PEM private keys and from .pub lines', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'vmkit-hostkeys-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const [type, args, want] of [
    ['ed25519', [], 'ssh-ed25519'],
    ['rsa', ['-b', '2048'], 'ssh-rsa'],
    ['rsa-pem', ['-b', '2048', '-m', 'PEM'], 'ssh-rsa'],
    ['ecdsa', [], 'ecdsa-sha2-nistp256'],
  ] as const) {
    const file = join(dir, type);
    const r = await execTool('ssh-keygen', ['-q', '-t', type.replace('-pem', ''), ...args, '-N', '', '-f', file]);
    if (r.code !== 0) throw new Error(r.stderr);
    t.equal(hostKeyType(await readFile(file, 'utf8')), want, `${type} private key`);
    t.equal(hostKeyType(await readFile(file + '.pub', 'utf8')), want, `${type} .pub`);
  }
  t.equal(hostKeyType('not a key'), null);
});

t.test('with the policy, Match lines that turn forwarding back on or allow more tries are commented out', async (t) => {
  const match = 'Match User deploy\n  X11Forwarding yes\n  AllowAgentForwarding yes\n  MaxAuthTries 6\nMatch User ops\n  MaxAuthTries 2\n';
  const on = planSshd(tree(STOCK + match), rulesFor(true));
  t.same(
    on.neutralised.map((l) => l.replace(/^.*: /, '')),
    ['X11Forwarding yes', 'AllowAgentForwarding yes', 'MaxAuthTries 6'],
    'a stricter MaxAuthTries 2 stays',
  );
  const dropIn = on.writes.find((w) => w.path.endsWith('00-vmkit-hardening.conf'))?.content ?? '';
  for (const line of ['KexAlgorithms -ecdh-sha2-*', 'HostKeyAlgorithms -ecdsa-sha2-*', 'X11Forwarding no', 'AllowAgentForwarding no', 'MaxAuthTries 3', 'LoginGraceTime 30']) {
    t.ok(dropIn.includes(line), `the drop-in says ${line}`);
  }
  t.notMatch(dropIn, /AllowTcpForwarding/, 'TCP forwarding is not touched');

  const off = planSshd(tree(STOCK + match), rulesFor(false));
  t.same(off.neutralised, [], 'without the policy those Match lines stay');
  t.notMatch(off.writes[0]?.content ?? '', /KexAlgorithms|X11Forwarding|MaxAuthTries|LoginGraceTime/);
});

t.test('a VM hardened before the policy is brought up to it; one hardened with it stays so when the policy is off', async (t) => {
  const stock = tree(STOCK);
  const base = planSshd(stock, rulesFor(false));
  const apply = (tr: ConfigTree, writes: { path: string; content: string }[]): ConfigTree => {
    const files = new Map(tr.files);
    for (const w of writes) files.set(w.path, w.content);
    const listed = [...files.keys()].filter((p) => p.includes('sshd_config.d/')).sort();
    return { ...tr, files, globs: new Map([['/etc/ssh/sshd_config.d/*.conf', listed]]) };
  };
  const old = apply(stock, base.writes);
  const upgrade = planSshd(old, rulesFor(true));
  t.ok(upgrade.changed, 'the policy rewrites the managed drop-in');
  const withPolicy = apply(old, upgrade.writes);
  t.notOk(planSshd(withPolicy, rulesFor(true)).changed, 'then nothing more to do');
  t.notOk(planSshd(withPolicy, rulesFor(false)).changed, 'and opting out later does not strip it');
});

const reason = await cannotRunSshd();
if (reason && process.env.CI === 'true') throw new Error(`CI must run the real-sshd tests: ${reason}`);
if (reason) t.test('the policy judged by the real sshd', { skip: reason }, () => undefined);
else await withSshd();

async function withSshd(): Promise<void> {
  const keysDir = await mkdtemp(join(tmpdir(), 'vmkit-harden-policy-'));
  const hostKey = await makeHostKey(keysDir);
  const ecdsaKey = join(keysDir, 'ssh_host_ecdsa_key');
  const made = await execTool('ssh-keygen', ['-q', '-t', 'ecdsa', '-N', '', '-f', ecdsaKey]);
  if (made.code !== 0) throw new Error(made.stderr);
  const deployKey = await makeUserKey(keysDir, 'deploy');
  const ns: SshdNamespace = await sshdNamespace();
  t.teardown(async () => {
    await ns.close();
    await rm(keysDir, { recursive: true, force: true });
  });
  const envFor = (fx: FixtureRoot, key = hostKey): HardenEnv => ({ root: fx.root, manageAccounts: false, sshdArgs: ['-h', key], exec: ns.exec });
  const fixture = async (tt: { teardown(fn: () => Promise<void>): void }, name: string) => {
    const fx = await fixtureRoot(name);
    tt.teardown(fx.cleanup);
    await writeFile(fx.paths.moduli, MODULI, { mode: 0o644 });
    return fx;
  };
  const effective = async (fx: FixtureRoot, user: string) => {
    const r = await ns.exec(SSHD, ['-T', '-f', fx.paths.sshdConfig, '-h', hostKey, '-C', `user=${user},host=somewhere,addr=198.51.100.4`]);
    if (r.code !== 0) throw new Error(`sshd -T failed: ${r.stderr}`);
    return (k: string) => new RegExp(`^${k} (.*)$`, 'm').exec(r.stdout)?.[1];
  };

  t.test('after hardening sshd -T shows the policy for any user, the moduli are strong, and a second run writes nothing', async (t) => {
    const fx = await fixture(t, 'debian-12-cloud-init');
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, envFor(fx));
    t.ok(r.ok, r.ok ? 'hardened' : JSON.stringify(r.error));
    const get = await effective(fx, 'someone');
    t.equal(get('x11forwarding'), 'no', 'the stock X11Forwarding yes is overridden');
    t.equal(get('allowagentforwarding'), 'no');
    t.equal(get('maxauthtries'), '3');
    t.equal(get('logingracetime'), '30');
    t.equal(get('allowtcpforwarding'), 'yes', 'TCP forwarding left as it was');
    t.notMatch(get('kexalgorithms'), /ecdh-sha2/);
    t.match(get('kexalgorithms'), /diffie-hellman-group-exchange-sha256/, 'group exchange stays for net-ssh');
    t.notMatch(get('hostkeyalgorithms'), /ecdsa/);
    t.match(get('hostkeyalgorithms'), /rsa-sha2-512/, 'RSA with SHA-2 stays for net-ssh without the ed25519 gem');
    t.match(get('ciphers'), /aes128-ctr/);
    t.equal(await readFile(fx.paths.moduli, 'utf8'), MODULI.split(modulus(2048)).join(''), 'moduli cut to 3072 bits and up');
    t.equal((await stat(fx.paths.moduli)).mode & 0o777, 0o644, 'with its mode kept');

    const settled = await treeState(fx.root);
    const again = await runHarden({ deploy_keys: [deployKey], dry_run: false }, envFor(fx));
    t.ok(again.ok && again.output.status === 'already_hardened');
    t.same(await treeState(fx.root), settled, 'nothing written');
  });

  t.test('when sshd would have no host key left to offer, the harden fails naming it and every file is restored', async (t) => {
    const fx = await fixture(t, 'debian-12-cloud-init');
    const before = await treeState(fx.root);
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false }, envFor(fx, ecdsaKey));
    t.notOk(r.ok);
    if (r.ok) return;
    t.equal(r.error.key, 'sshd_effective_check_failed');
    t.match(r.error.message, /no host key sshd may offer.*ecdsa-sha2-nistp256.*harden without the SSH policy/);
    t.same(withoutTimes(await treeState(fx.root)), withoutTimes(before), 'sshd files and moduli as they were');
    const optOut = await runHarden({ deploy_keys: [deployKey], dry_run: false, ssh_policy: false }, envFor(fx, ecdsaKey));
    t.ok(optOut.ok && optOut.output.status === 'hardened', 'without the policy the same VM can be hardened');
  });

  t.test('with ssh_policy false the crypto, forwarding, limits and moduli are untouched', async (t) => {
    const fx = await fixture(t, 'debian-12-cloud-init');
    await appendFile(fx.paths.sshdConfig, 'Match User deploy\n    X11Forwarding yes\n');
    const before = await effective(fx, 'deploy');
    const keys = ['kexalgorithms', 'ciphers', 'macs', 'hostkeyalgorithms', 'x11forwarding', 'allowagentforwarding', 'maxauthtries', 'logingracetime'];
    const r = await runHarden({ deploy_keys: [deployKey], dry_run: false, ssh_policy: false }, envFor(fx));
    t.ok(r.ok, r.ok ? 'hardened' : JSON.stringify(r.error));
    t.match(r.ok ? r.output.steps.find((s) => s.step === 'sshd_config')?.detail : '', /ssh policy off/);
    const after = await effective(fx, 'deploy');
    for (const k of keys) t.equal(after(k), before(k), `${k} as before`);
    t.equal(after('passwordauthentication'), 'no', 'passwords are off all the same');
    t.equal(await readFile(fx.paths.moduli, 'utf8'), MODULI, 'moduli untouched');
    t.match(await readFile(fx.paths.sshdConfig, 'utf8'), /^ {4}X11Forwarding yes$/m, 'the Match line is not commented out');
  });
}
