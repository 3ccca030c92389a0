import { execFileSync } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import ssh2 from 'ssh2';
import { SshKeyError, generateEd25519KeyPair, parseSshPublicKey } from '../../control-plane/src/shell/ssh-key.ts';
import { prerequisite } from '../helpers/prereq.ts';

const ed = generateEd25519KeyPair('alice@laptop').public;
const ecdsa = ssh2.utils.generateKeyPairSync('ecdsa', { bits: 256 }).public;

t.test('every generated Ed25519 pair reads back', async (t) => {
  // ssh2's own generator makes an unreadable pair about once in 256 (a public key with a
  // leading zero byte loses it): 2,000 pairs meet one with near certainty.
  const bad: string[] = [];
  for (let i = 0; i < 2_000; i++) {
    const pair = generateEd25519KeyPair('k');
    const pub = ssh2.utils.parseKey(pair.public);
    const priv = ssh2.utils.parseKey(pair.private);
    if (pub instanceof Error || priv instanceof Error || pub.getPublicSSH().length !== 51) bad.push(pair.public);
  }
  t.same(bad, [], 'all 2,000 parse, with a 32-byte key');
});

const sshKeygen = '/usr/bin/ssh-keygen';
t.test('OpenSSH reads a generated Ed25519 key', { skip: prerequisite(!existsSync(sshKeygen) && 'ssh-keygen is not installed (openssh-client)') }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmk-edkey-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const pair = generateEd25519KeyPair('openssh-check');
  writeFileSync(join(dir, 'id'), pair.private, { mode: 0o600 });
  const derived = execFileSync(sshKeygen, ['-y', '-f', join(dir, 'id')], { encoding: 'utf8' }).trim();
  t.equal(derived.split(' ').slice(0, 2).join(' '), pair.public.split(' ').slice(0, 2).join(' '), 'OpenSSH reads the private key and derives the same public key');
});

t.test('an Ed25519 line is accepted with its type, comment and SHA256 fingerprint', async (t) => {
  const k = parseSshPublicKey(`${ed}\n`);
  t.equal(k.type, 'ssh-ed25519');
  t.equal(k.comment, 'alice@laptop');
  t.match(k.fingerprint, /^SHA256:[A-Za-z0-9+/]{43}$/);
  t.equal(k.line, ed.trim());
});

t.test('an ECDSA key without comment is accepted', async (t) => {
  const k = parseSshPublicKey(ecdsa);
  t.equal(k.type, 'ecdsa-sha2-nistp256');
  t.equal(k.comment, null);
});

const noKeygen = (() => {
  try {
    execFileSync('ssh-keygen', ['-?'], { stdio: 'ignore' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'ssh-keygen (openssh-client) is not installed';
  }
  return false;
})();
t.test('the fingerprint is the one ssh-keygen prints', { skip: prerequisite(noKeygen) }, async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-sshk-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'op', '-f', join(dir, 'id')]);
  const printed = execFileSync('ssh-keygen', ['-l', '-E', 'sha256', '-f', join(dir, 'id.pub')], { encoding: 'utf8' });
  t.equal(parseSshPublicKey(readFileSync(join(dir, 'id.pub'), 'utf8')).fingerprint, printed.split(' ')[1]);
});

const refused: [string, string, RegExp][] = [
  ['an empty line', '   ', /empty/],
  ['two keys at once', `${ed}\n${ecdsa}`, /one public key line/],
  ['a private key', '-----BEGIN OPENSSH PRIVATE KEY-----', /PEM/],
  ['a DSA key', 'ssh-dss AAAAB3NzaC1kc3MAAACBAP', /not accepted/],
  ['authorized_keys options in front', `command="id" ${ed}`, /not accepted/],
  ['data that is not base64', 'ssh-ed25519 !!!notbase64', /not base64/],
  ['an Ed25519 type over an ECDSA blob', `ssh-ed25519 ${ecdsa.split(' ')[1] ?? ''}`, /not a ssh-ed25519 key/],
  ['a truncated key', `ssh-ed25519 ${(ed.split(' ')[1] ?? '').slice(0, 40)}`, /base64|not a|not a valid/],
  ['a comment with control characters', `${ed.split(' ').slice(0, 2).join(' ')} evil\u001b[2J`, /control characters/],
];
for (const [what, line, why] of refused) {
  t.test(`${what} is refused with a reason`, async (t) => {
    t.throws(() => parseSshPublicKey(line), SshKeyError);
    t.throws(() => parseSshPublicKey(line), { message: why });
  });
}

t.test('an RSA key shorter than 2048 bits is refused, a 3072-bit one accepted', async (t) => {
  const rsaLine = (bits: number) => {
    const { publicKey } = generateKeyPairSync('rsa', { modulusLength: bits });
    const jwk = publicKey.export({ format: 'jwk' });
    const mpint = (b64url: string) => {
      let b = Buffer.from(b64url, 'base64url');
      if ((b[0] ?? 0) & 0x80) b = Buffer.concat([Buffer.from([0]), b]);
      const len = Buffer.alloc(4);
      len.writeUInt32BE(b.length);
      return Buffer.concat([len, b]);
    };
    const str = (s: string) => {
      const len = Buffer.alloc(4);
      len.writeUInt32BE(s.length);
      return Buffer.concat([len, Buffer.from(s)]);
    };
    return `ssh-rsa ${Buffer.concat([str('ssh-rsa'), mpint(jwk.e ?? ''), mpint(jwk.n ?? '')]).toString('base64')}`;
  };
  t.throws(() => parseSshPublicKey(rsaLine(1024)), { message: /at least 2048 bits; this one has 1024/ });
  t.equal(parseSshPublicKey(rsaLine(3072)).type, 'ssh-rsa');
});
