import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { pinKeys, verifyReleaseManifest } from '@vmkit/protocol';
import type { AgentReleaseManifest } from '@vmkit/protocol';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';

/**
 * GET /agent/releases/{version}/{platform} and its executable, served from a releases
 * folder. The control plane never runs what it serves, so these releases are random
 * bytes in the build's layout (test/agent covers real executables).
 */

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function putRelease(dir: string, version: string, bytes: Buffer, manifest: Record<string, unknown> | string = {}): void {
  const d = join(dir, version, 'linux-x64');
  mkdirSync(d, { recursive: true });
  writeFileSync(join(d, 'vmkit-agent'), bytes, { mode: 0o755 });
  if (manifest === 'none') return;
  const text = typeof manifest === 'string' ? manifest : JSON.stringify({ version, platform: 'linux-x64', sha256: sha(bytes), size: bytes.length, ...manifest });
  writeFileSync(join(d, 'manifest.json'), text);
}

async function withReleases(t: Test): Promise<{ cp: TestControlPlane; dir: string }> {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-rel-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const cp = await startTestControlPlane({ config: { agentReleasesDir: dir } });
  t.teardown(() => cp.close());
  return { cp, dir };
}

const published = (cp: TestControlPlane) => pinKeys(cp.ctx.keyRing?.published() ?? []);

t.test('the manifest is signed by the active command-signing key and names the bytes served', async (t) => {
  const { cp, dir } = await withReleases(t);
  const bytes = randomBytes(70_000);
  putRelease(dir, '0.2.0', bytes);
  const res = await cp.api<AgentReleaseManifest>('GET', '/agent/releases/0.2.0/linux-x64', { key: null });
  t.equal(res.status, 200);
  t.same(Object.keys(res.body).sort(), ['key_id', 'platform', 'sha256', 'signature', 'size', 'version']);
  t.equal(res.body.sha256, sha(bytes));
  t.equal(res.body.size, bytes.length);
  t.equal(res.body.key_id, cp.ctx.keyRing?.active().keyId);
  const verdict = verifyReleaseManifest(res.body, published(cp));
  t.ok(verdict.ok, 'it verifies under the keys agents pin');
  t.notOk(verifyReleaseManifest({ ...res.body, size: res.body.size + 1 }, published(cp)).ok, 'a changed size does not');

  const art = await fetch(`${cp.url}/agent/releases/0.2.0/linux-x64/vmkit-agent`);
  t.equal(art.status, 200);
  t.equal(art.headers.get('content-type'), 'application/octet-stream');
  t.equal(art.headers.get('content-length'), String(bytes.length));
  t.equal(art.headers.get('x-content-sha256'), sha(bytes));
  t.ok(Buffer.from(await art.arrayBuffer()).equals(bytes), 'the executable, byte for byte');
});

t.test('latest is the highest version by semver precedence', async (t) => {
  const { cp, dir } = await withReleases(t);
  for (const v of ['0.9.0', '0.10.0-rc.1', '0.10.0-rc.2', '0.2.5']) putRelease(dir, v, randomBytes(100));
  mkdirSync(join(dir, 'not-a-version', 'linux-x64'), { recursive: true });
  writeFileSync(join(dir, 'not-a-version', 'linux-x64', 'vmkit-agent'), 'x');
  const a = await cp.api<AgentReleaseManifest>('GET', '/agent/releases/latest/linux-x64', { key: null });
  t.equal(a.body.version, '0.10.0-rc.2');
  putRelease(dir, '0.10.0', randomBytes(100));
  const b = await cp.api<AgentReleaseManifest>('GET', '/agent/releases/latest/linux-x64', { key: null });
  t.equal(b.body.version, '0.10.0', 'a release sorts after its pre-releases');
  const none = await cp.api<{ error: string; message: string }>('GET', '/agent/releases/latest/linux-arm64', { key: null });
  t.equal(none.status, 404);
  t.equal(none.body.error, 'release_not_found');
});

t.test('bad versions and platforms are refused; missing releases are 404', async (t) => {
  const { cp, dir } = await withReleases(t);
  putRelease(dir, '1.0.0', randomBytes(10));
  const cases: [string, number, string][] = [
    ['/agent/releases/1.0/linux-x64', 400, 'invalid_request'],
    ['/agent/releases/..%2F..%2Fetc/linux-x64', 400, 'invalid_request'],
    ['/agent/releases/1.0.0/windows-x64', 400, 'invalid_request'],
    ['/agent/releases/latest/linux-x64/vmkit-agent', 400, 'invalid_request'],
    ['/agent/releases/1.0.1/linux-x64', 404, 'release_not_found'],
    ['/agent/releases/1.0.1/linux-x64/vmkit-agent', 404, 'release_not_found'],
  ];
  for (const [path, status, key] of cases) {
    const r = await cp.api<{ error: string; message: string }>('GET', path, { key: null });
    t.equal(r.status, status, path);
    t.equal(r.body.error, key, `${path}: ${r.body.message}`);
  }
});

t.test('a release whose files disagree with its build manifest is not served', async (t) => {
  const { cp, dir } = await withReleases(t);
  putRelease(dir, '1.0.0', randomBytes(1000), { sha256: 'f'.repeat(64) });
  putRelease(dir, '1.0.1', randomBytes(1000), '{not json');
  putRelease(dir, '1.0.2', randomBytes(1000), 'none');
  for (const v of ['1.0.0', '1.0.1']) {
    for (const path of [`/agent/releases/${v}/linux-x64`, `/agent/releases/${v}/linux-x64/vmkit-agent`]) {
      const r = await cp.api<{ error: string; message: string }>('GET', path, { key: null });
      t.equal(r.status, 500, path);
      t.equal(r.body.error, 'release_corrupt', `${path}: ${r.body.message}`);
    }
  }
  const bare = await cp.api<AgentReleaseManifest>('GET', '/agent/releases/1.0.2/linux-x64', { key: null });
  t.equal(bare.status, 200, 'without manifest.json the file itself is described');
});

t.test('a replaced executable is hashed again', async (t) => {
  const { cp, dir } = await withReleases(t);
  const first = randomBytes(5000);
  putRelease(dir, '2.0.0', first, 'none');
  const a = await cp.api<AgentReleaseManifest>('GET', '/agent/releases/2.0.0/linux-x64', { key: null });
  t.equal(a.body.sha256, sha(first));
  const second = randomBytes(6000);
  rmSync(join(dir, '2.0.0', 'linux-x64', 'vmkit-agent'));
  putRelease(dir, '2.0.0', second, 'none');
  const b = await cp.api<AgentReleaseManifest>('GET', '/agent/releases/2.0.0/linux-x64', { key: null });
  t.equal(b.body.sha256, sha(second));
  t.equal(b.body.size, 6000);
});

t.test('after a key rotation the manifest is signed by the new active key', async (t) => {
  const { cp, dir } = await withReleases(t);
  putRelease(dir, '1.0.0', randomBytes(10));
  const before = (await cp.api<AgentReleaseManifest>('GET', '/agent/releases/1.0.0/linux-x64', { key: null })).body;
  t.equal((await cp.api('POST', '/api/admin/signing-keys')).status, 201);
  t.equal((await cp.api('POST', '/api/admin/signing-keys/promote')).status, 200);
  const after = (await cp.api<AgentReleaseManifest>('GET', '/agent/releases/1.0.0/linux-x64', { key: null })).body;
  t.not(after.key_id, before.key_id);
  t.equal(after.key_id, cp.ctx.keyRing?.active().keyId);
  t.ok(verifyReleaseManifest(after, published(cp)).ok);
});
