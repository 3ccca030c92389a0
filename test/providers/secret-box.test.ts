import { execFile } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import t from 'tap';
import type { Test } from 'tap';
import { SECRET_KEY_FILE, SecretBox, SecretBoxError, loadOrCreateSecretKey } from '../../control-plane/src/auth/secret-box.ts';

const run = promisify(execFile);
const SECRET_BOX = fileURLToPath(new URL('../../control-plane/src/auth/secret-box.ts', import.meta.url));

function dataDir(t: Test): string {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-secret-box-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/** Flips one character of part `index` of an envelope, keeping it valid base64url. */
function tamper(envelope: string, index: number): string {
  const parts = envelope.split('.');
  const p = parts[index] ?? '';
  const bytes = Buffer.from(p, 'base64url');
  bytes[0] = (bytes[0] ?? 0) ^ 0x01;
  parts[index] = bytes.toString('base64url');
  return parts.join('.');
}

const TOKEN = 'hcloud-token-0123456789abcdefghijklmnopqrstuvwxyz0123456789ABCD';

t.test('a sealed secret opens again to the same text', async (t) => {
  const box = SecretBox.forDataDir(dataDir(t));
  const sealed = box.seal(TOKEN, 'ws_1/compute/hetzner');
  t.notMatch(sealed, TOKEN, 'the envelope does not carry the secret in clear');
  t.match(sealed, /^v1\.[0-9a-f]{8}\./, 'versioned envelope naming the key');
  t.equal(box.open(sealed, 'ws_1/compute/hetzner'), TOKEN);
  t.equal(box.open(box.seal('', 'ctx'), 'ctx'), '', 'an empty secret round-trips too');
});

t.test('sealing the same secret twice gives different envelopes (fresh IV each time)', async (t) => {
  const box = SecretBox.forDataDir(dataDir(t));
  const a = box.seal(TOKEN, 'ctx');
  const b = box.seal(TOKEN, 'ctx');
  t.not(a, b);
  t.not(a.split('.')[2], b.split('.')[2], 'the IVs differ');
});

t.test('a tampered envelope is refused, whichever part was changed', async (t) => {
  const box = SecretBox.forDataDir(dataDir(t));
  const sealed = box.seal(TOKEN, 'ctx');
  for (const [index, part] of [[2, 'iv'], [3, 'tag'], [4, 'ciphertext']] as const) {
    t.throws(() => box.open(tamper(sealed, index), 'ctx'), { name: 'SecretBoxError', message: /integrity check/ }, `changed ${part}`);
  }
  t.throws(() => box.open(sealed.split('.').slice(0, 4).join('.'), 'ctx'), SecretBoxError, 'a cut envelope');
  t.throws(() => box.open(`v2${sealed.slice(2)}`, 'ctx'), { message: /not a v1 envelope/ }, 'an unknown version');
});

t.test('a secret sealed for one workspace does not open for another', async (t) => {
  const box = SecretBox.forDataDir(dataDir(t));
  const sealed = box.seal(TOKEN, 'ws_1/dns/cloudflare');
  t.throws(() => box.open(sealed, 'ws_2/dns/cloudflare'), { message: /integrity check/ });
});

t.test('the key file is created with mode 0600 and reused by the next start', async (t) => {
  const dir = dataDir(t);
  const first = SecretBox.forDataDir(dir);
  const file = join(dir, SECRET_KEY_FILE);
  t.equal(statSync(file).mode & 0o777, 0o600);
  const sealed = first.seal(TOKEN, 'ctx');
  const second = SecretBox.forDataDir(dir);
  t.equal(second.keyId, first.keyId);
  t.equal(second.open(sealed, 'ctx'), TOKEN, 'a restarted control plane still opens what it sealed');
});

t.test('a key file left readable by others is narrowed back to 0600', async (t) => {
  const dir = dataDir(t);
  SecretBox.forDataDir(dir);
  const file = join(dir, SECRET_KEY_FILE);
  chmodSync(file, 0o644);
  SecretBox.forDataDir(dir);
  t.equal(statSync(file).mode & 0o777, 0o600);
});

t.test('a malformed key file is refused and left as it is', async (t) => {
  const dir = dataDir(t);
  const file = join(dir, SECRET_KEY_FILE);
  writeFileSync(file, 'not a key\n', { mode: 0o600 });
  t.throws(() => SecretBox.forDataDir(dir), { name: 'SecretBoxError', message: /refusing to replace it/ });
  t.equal(readFileSync(file, 'utf8'), 'not a key\n');
});

t.test('a secret sealed under another key says which key it needs', async (t) => {
  const sealed = SecretBox.forDataDir(dataDir(t)).seal(TOKEN, 'ctx');
  const other = SecretBox.forDataDir(dataDir(t));
  t.throws(() => other.open(sealed, 'ctx'), { message: /sealed under key [0-9a-f]{8}, but secret-box\.key holds key [0-9a-f]{8}/ });
});

t.test('a fingerprint names a secret without revealing it', async (t) => {
  const dir = dataDir(t);
  const box = SecretBox.forDataDir(dir);
  const fp = box.fingerprint(TOKEN);
  t.match(fp, /^sha256:[0-9a-f]{16}$/);
  t.notMatch(fp, TOKEN.slice(0, 8));
  t.equal(SecretBox.forDataDir(dir).fingerprint(TOKEN), fp, 'stable across restarts');
  t.not(box.fingerprint(`${TOKEN}x`), fp, 'another secret, another fingerprint');
  t.not(SecretBox.forDataDir(dataDir(t)).fingerprint(TOKEN), fp, 'keyed: another control plane cannot compute it');
});

t.test('control planes starting at the same moment agree on one key', async (t) => {
  const dir = dataDir(t);
  const script = `import { loadOrCreateSecretKey } from ${JSON.stringify(SECRET_BOX)}; console.log(loadOrCreateSecretKey(${JSON.stringify(dir)}).toString('hex'));`;
  const outputs = await Promise.all(
    Array.from({ length: 4 }, () => run(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script])),
  );
  const keys = new Set(outputs.map((o) => o.stdout.trim()));
  t.equal(keys.size, 1, 'every process read the same key');
  t.equal([...keys][0], loadOrCreateSecretKey(dir).toString('hex'));
});
