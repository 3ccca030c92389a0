// The SSH policy on a real sandbox VM: ssh-audit finds nothing to fail, and kamal still
// gets in the way Kamal does (Ruby net-ssh through SSHKit), with OpenSSH and with ssh2.
import t from 'tap';
import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import ssh2 from 'ssh2';
import { deployKeyStoreOf } from '../../control-plane/src/services/harden/context.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { connectMcp, textOf } from '../helpers/mcp-client.ts';
import { fileNeeds } from '../helpers/prereq.ts';
import { startEnrolledVm } from '../helpers/enrolled-vm.ts';
import { sandboxSkipReason, sshRun } from '../helpers/sandbox.ts';
import type { TestSandbox } from '../helpers/sandbox.ts';
import type { HardenBody } from '../helpers/harden-body.ts';

t.setTimeout(600_000);

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function run(file: string, args: readonly string[], timeoutMs = 60_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(file, [...args], { timeout: timeoutMs, maxBuffer: 8 * 1024 * 1024 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

const NET_SSH_LOGIN = fileURLToPath(new URL('../helpers/net-ssh-login.rb', import.meta.url));

async function missingTools(): Promise<string | null> {
  const missing: string[] = [];
  if ((await run('ssh-audit', ['-h'])).stdout.indexOf('ssh-audit') === -1) missing.push('ssh-audit (Debian package ssh-audit)');
  if ((await run('ruby', ['-e', 'require "net/ssh"; require "sshkit"'])).code !== 0) missing.push('ruby with net-ssh and sshkit (ruby-net-ssh, ruby-sshkit)');
  if ((await run('ssh', ['-V'])).code !== 0) missing.push('OpenSSH ssh');
  return missing.length > 0 ? `missing ${missing.join(', ')}` : null;
}

if (fileNeeds(sandboxSkipReason || (await missingTools()))) await main();

interface Audit {
  code: number | null;
  /** Every line ssh-audit rated [fail]. */
  fails: string[];
  /** How many (kex)/(key)/(enc)/(mac) lines it printed: proof it really scanned. */
  algorithms: number;
  text: string;
}

/** ssh-audit's text report (2.5's JSON carries no ratings), colours off and stripped anyway. */
async function sshAudit(host: string): Promise<Audit> {
  const r = await run('ssh-audit', ['-n', '-t', '30', '-p', '22', host], 180_000);
  // eslint-disable-next-line no-control-regex -- ANSI colour codes, in case -n is ignored
  const text = r.stdout.replace(/\x1b\[[0-9;]*m/g, '');
  const lines = text.split('\n');
  return {
    code: r.code,
    fails: lines.filter((l) => /\[fail\]/i.test(l)).map((l) => l.trim()),
    algorithms: lines.filter((l) => /^\((kex|key|enc|mac)\) \S/.test(l.trim())).length,
    text,
  };
}

/** `sshd -T` inside the VM for a connection of `user`: keyword → first value. */
async function effectiveIn(sb: TestSandbox, user: string): Promise<Map<string, string>> {
  const r = await sb.exec(['/usr/sbin/sshd', '-T', '-C', `user=${user},host=client.example,addr=203.0.113.7`]);
  if (r.code !== 0) throw new Error(`sshd -T failed: ${r.stderr}`);
  const map = new Map<string, string>();
  for (const line of r.stdout.split('\n')) {
    const m = /^(\S+) (.*)$/.exec(line);
    if (m?.[1] && !map.has(m[1])) map.set(m[1], m[2] ?? '');
  }
  return map;
}

/** Data lines of /etc/ssh/moduli → their bit sizes (the file's size column is bits - 1). */
function moduliSizes(content: string): number[] {
  return content
    .split('\n')
    .filter((l) => l.trim() !== '' && !l.startsWith('#'))
    .map((l) => Number(l.trim().split(/\s+/)[4]) + 1);
}

const POLICY_KEYS = ['kexalgorithms', 'ciphers', 'macs', 'hostkeyalgorithms', 'x11forwarding', 'allowagentforwarding', 'maxauthtries', 'logingracetime', 'allowtcpforwarding'];

async function main(): Promise<void> {
  const ROOT_PASSWORD = 'fresh-cloud-vm-password';
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  const deployKey = await deployKeyStoreOf(cp.ctx).get(cp.workspaceId);
  const keyDir = mkdtempSync(join(tmpdir(), 'vmkit-policy-key-'));
  t.teardown(() => rmSync(keyDir, { recursive: true, force: true }));
  const keyFile = join(keyDir, 'deploy');
  writeFileSync(keyFile, deployKey.privateKey, { mode: 0o600 });
  chmodSync(keyFile, 0o600);
  const sshOpts = (host: string) => [
    '-F', '/dev/null', '-i', keyFile, '-o', 'IdentitiesOnly=yes', '-o', 'BatchMode=yes', '-o', 'StrictHostKeyChecking=no',
    '-o', 'UserKnownHostsFile=/dev/null', '-o', 'ConnectTimeout=30', '-v', `kamal@${host}`,
  ];

  t.test('after hardening ssh-audit reports no fail, and kamal gets in with ssh, ssh2 and net-ssh/SSHKit', async (t) => {
    const { id, sb } = await startEnrolledVm(t, cp, { name: 'policy-1', rootPassword: ROOT_PASSWORD });
    const host = sb.vm.address;

    const before = await sshAudit(host);
    t.ok(before.algorithms > 10, `ssh-audit scanned the stock sshd (${before.algorithms} algorithm lines)`);
    t.ok(before.fails.length > 0, `and failed some of it, so the report is read right: ${before.fails.join(' | ')}`);
    t.comment(`ssh-audit before hardening: ${before.fails.length} fail, ${before.text.split('\n').filter((l) => /\[warn\]/.test(l)).length} warn`);

    const res = await cp.api<HardenBody>('POST', `/api/instances/${id}/harden`, { body: { wait_ms: 120_000 } });
    t.equal(res.status, 200, JSON.stringify(res.body));
    t.equal(res.body.status, 'hardened');
    t.equal(res.body.verification?.ok, true, 'the outside check over SSH passed');
    t.match(res.body.steps?.find((s) => s.step === 'sshd_config')?.detail, /ssh policy on.*rewrite \/etc\/ssh\/moduli/);

    const audit = await sshAudit(host);
    t.ok(audit.algorithms > 10, `ssh-audit scanned the hardened sshd (${audit.algorithms} algorithm lines)`);
    t.same(audit.fails, [], 'ssh-audit rates nothing [fail]');
    // ssh-audit 2.x exit codes: 0 good, 1 connection error, 2 warnings, 3 failures.
    t.ok(audit.code === 0 || audit.code === 2, `its exit code says neither failure nor connection error (${String(audit.code)})`);
    const warns = audit.text.split('\n').filter((l) => /\[warn\]/.test(l));
    t.comment(`ssh-audit after hardening: 0 fail, ${warns.length} warn\n${warns.map((l) => l.trim()).join('\n')}`);
    t.match(audit.text, /^\(kex\) diffie-hellman-group-exchange-sha256 \(\d+-bit\)/m, 'group exchange is offered for net-ssh, with its modulus tested');

    const eff = await effectiveIn(sb, 'kamal');
    t.equal(eff.get('x11forwarding'), 'no');
    t.equal(eff.get('allowagentforwarding'), 'no');
    t.equal(eff.get('maxauthtries'), '3');
    t.equal(eff.get('logingracetime'), '30');
    t.equal(eff.get('allowtcpforwarding'), 'yes', "TCP forwarding stays: Kamal's local registry needs it");
    t.notMatch(eff.get('kexalgorithms'), /ecdh-sha2/, 'no NIST-curve key exchange');
    t.notMatch(eff.get('hostkeyalgorithms'), /ecdsa|(^|,)ssh-rsa(,|$)/, 'no ECDSA or SHA-1 RSA host key signatures');
    t.notMatch(eff.get('macs'), /sha1|umac-64|(^|,)hmac-sha2-(256|512)(,|$)/, 'encrypt-then-MAC only, no SHA-1 or 64-bit tags');
    t.match(eff.get('ciphers'), /aes256-ctr/, 'the -ctr ciphers net-ssh needs stay');
    const moduli = moduliSizes((await sb.exec(['cat', '/etc/ssh/moduli'])).stdout);
    t.ok(moduli.length > 0 && moduli.every((bits) => bits >= 3072), `moduli: ${moduli.length} primes, all >= 3072 bits`);

    const viaSsh = await run('ssh', [...sshOpts(host), 'id']);
    t.equal(viaSsh.code, 0, 'OpenSSH ssh exits 0', { stderr: viaSsh.code === 0 ? '' : viaSsh.stderr.slice(-2000) });
    t.match(viaSsh.stdout, /uid=\d+\(kamal\).*\(docker\)/, 'OpenSSH ssh: kamal runs id');
    const sshKex = /kex: algorithm: (\S+)/.exec(viaSsh.stderr)?.[1];
    t.ok(sshKex && !sshKex.startsWith('ecdh-'), `OpenSSH negotiated ${sshKex ?? '?'}`);

    const viaSsh2 = await sshRun({ host, username: 'kamal', privateKey: deployKey.privateKey }, 'id', 30_000);
    t.match(viaSsh2.stdout, /uid=\d+\(kamal\).*\(docker\)/, 'ssh2: kamal runs id');

    for (const hostKeys of ['', 'rsa-sha2-512,rsa-sha2-256']) {
      const rb = await run('ruby', [NET_SSH_LOGIN, host, 'kamal', keyFile, hostKeys]);
      t.equal(rb.code, 0, 'the Ruby script exits 0', { stderr: rb.stderr.slice(-2000) });
      const out = JSON.parse(rb.stdout.trim().split('\n').at(-1) ?? '{}') as { id?: string; kex?: string; host_key?: string; cipher?: string; mac?: string; net_ssh?: string };
      const label = `net-ssh ${out.net_ssh ?? '?'} via SSHKit${hostKeys ? ' (RSA host keys only, as without the ed25519 gem)' : ''}`;
      t.match(out.id, /uid=\d+\(kamal\).*\(docker\)/, `${label}: kamal runs id`);
      t.equal(out.kex, 'diffie-hellman-group-exchange-sha256', `${label}: key exchange`);
      t.match(out.cipher, /^aes\d+-ctr$/, `${label}: cipher ${out.cipher ?? '?'}`);
      t.match(out.mac, /-etm@openssh\.com$/, `${label}: MAC ${out.mac ?? '?'}`);
      if (hostKeys) t.match(out.host_key, /^rsa-sha2-/, `${label}: host key ${out.host_key ?? '?'}`);
    }

    // Kamal 2's local registry: the VM pulls from a registry on the deploying machine
    // through a remote forward, and Kamal reaches services on the VM through local ones.
    const conn = new ssh2.Client();
    await new Promise<void>((resolve, reject) => {
      conn.on('ready', () => resolve()).on('error', reject);
      conn.connect({ host, port: 22, username: 'kamal', privateKey: deployKey.privateKey, hostVerifier: () => true, readyTimeout: 30_000 });
    });
    t.teardown(() => conn.end());
    const remotePort = await new Promise<number>((resolve, reject) => conn.forwardIn('127.0.0.1', 0, (err, port) => (err ? reject(err) : resolve(port))));
    t.ok(remotePort > 0, `remote forwarding is allowed (VM port ${remotePort})`);
    const banner = await new Promise<string>((resolve, reject) => {
      conn.forwardOut('127.0.0.1', 0, '127.0.0.1', 22, (err, stream) => {
        if (err) return reject(err);
        stream.once('data', (b: Buffer) => {
          resolve(b.toString('latin1').split('\r\n')[0] ?? '');
          stream.end();
        });
      });
    });
    t.match(banner, /^SSH-2\.0-/, 'local forwarding reaches a port on the VM');
  });

  t.test('a Match all block that turns passwords back on no longer blocks hardening', async (t) => {
    const { id, sb } = await freshWithMatchAll(t);
    const res = await cp.api<HardenBody>('POST', `/api/instances/${id}/harden`, { body: { wait_ms: 120_000 } });
    t.equal(res.status, 200, JSON.stringify(res.body));
    t.equal(res.body.status, 'hardened');
    t.match(res.body.steps?.find((s) => s.step === 'sshd_config')?.detail, /Match lines commented out: \/etc\/ssh\/sshd_config:\d+: PasswordAuthentication yes/);
    t.equal((await effectiveIn(sb, 'kamal')).get('passwordauthentication'), 'no', 'sshd -T in the VM: no passwords');
    await t.rejects(sshRun({ host: sb.vm.address, password: ROOT_PASSWORD }, 'true'), 'root with a password is refused');
    await t.rejects(sshRun({ host: sb.vm.address, username: 'kamal', password: 'anything' }, 'true'), 'kamal with a password is refused');
    const kamal = await sshRun({ host: sb.vm.address, username: 'kamal', privateKey: deployKey.privateKey }, 'id', 30_000);
    t.match(kamal.stdout, /\(kamal\)/, 'kamal logs in with the deploy key');
  });

  /** The reproduction: append a `Match all` block to sshd_config and reload sshd. */
  async function freshWithMatchAll(tt: Parameters<typeof startEnrolledVm>[0]) {
    const vm = await startEnrolledVm(tt, cp, { name: 'policy-2', rootPassword: ROOT_PASSWORD });
    await vm.sb.exec(['sh', '-c', 'printf "Match all\\n    PasswordAuthentication yes\\n" >> /etc/ssh/sshd_config && /usr/sbin/sshd -t && kill -HUP "$(cat /run/sshd.pid)"']);
    return vm;
  }

  t.test('with ssh_policy false (harden_vm over MCP) crypto, forwarding, limits and moduli are left as they were', async (t) => {
    const { id, sb } = await startEnrolledVm(t, cp, { name: 'policy-3', rootPassword: ROOT_PASSWORD });
    const before = await effectiveIn(sb, 'kamal');
    const moduliBefore = (await sb.exec(['sha256sum', '/etc/ssh/moduli'])).stdout;

    const client = await connectMcp(`${cp.url}/mcp`, cp.adminKey);
    t.teardown(() => client.close());
    const res = await client.callTool({ name: 'harden_vm', arguments: { instance_id: id, ssh_policy: false } }, undefined, { timeout: 180_000 });
    t.notOk(res.isError, textOf(res));
    const out = res.structuredContent as HardenBody;
    t.equal(out.status, 'hardened');
    t.equal(out.instance_id, id, 'the contract fields are there');

    const after = await effectiveIn(sb, 'kamal');
    for (const k of POLICY_KEYS) t.equal(after.get(k), before.get(k), `${k} untouched`);
    t.equal(after.get('passwordauthentication'), 'no', 'passwords are still turned off');
    t.equal((await effectiveIn(sb, 'root')).get('permitrootlogin'), 'no', 'and root login');
    t.equal((await sb.exec(['sha256sum', '/etc/ssh/moduli'])).stdout, moduliBefore, '/etc/ssh/moduli untouched');
    const dropIn = (await sb.exec(['cat', '/etc/ssh/sshd_config.d/00-vmkit-hardening.conf'])).stdout;
    t.notMatch(dropIn, /KexAlgorithms|X11Forwarding|MaxAuthTries/, 'the managed settings hold only the base rules');

    const bad = await cp.api<{ error: string; message: string }>('POST', `/api/instances/${id}/harden`, { body: { ssh_policy: 'off' } });
    t.equal(bad.status, 400, 'a non-boolean ssh_policy is refused');
    t.type(bad.body.error, 'string');
    t.type(bad.body.message, 'string');
  });
}
