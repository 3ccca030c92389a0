import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { newId, releaseArtifactPath } from '@vmkit/protocol';
import type { AgentUpdateParams, CommandEnvelope, SigningKey } from '@vmkit/protocol';
import { createLogger } from '../../vmkit-agent/src/log.ts';
import type { ExecutorContext } from '../../vmkit-agent/src/executors/types.ts';
import { agentUpdateExecutor, releaseUrls } from '../../vmkit-agent/src/update/executor.ts';
import type { UpdateEnv } from '../../vmkit-agent/src/update/executor.ts';
import { readMarker, writeMarker } from '../../vmkit-agent/src/update/marker.ts';
import { UpdateError } from '../../vmkit-agent/src/update/fetch-release.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { fixtureKey } from '../helpers/fixtures.ts';

/**
 * The agent.update executor in this process against a real control plane's release
 * routes (random bytes as releases: whether the staged file runs is stood in for here;
 * test/agent/update.test.ts runs real executables). Every refusal leaves the install
 * as it was: no new folder under versions/, current unchanged, no marker.
 */

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const quiet = createLogger('error', () => undefined);

interface Rig {
  cp: TestControlPlane;
  root: string;
  state: string;
  bytes: Buffer;
  pinned: SigningKey[];
  env(over?: Partial<UpdateEnv>): UpdateEnv;
  params(over?: Partial<AgentUpdateParams>): AgentUpdateParams;
  run(params: AgentUpdateParams, env?: UpdateEnv, pinned?: SigningKey[]): Promise<{ status: string; error?: { key: string; message: string }; output?: Record<string, unknown> }>;
  untouched(t: Test): void;
}

async function rig(t: Test): Promise<Rig> {
  const releases = mkdtempSync(join(tmpdir(), 'vmkit-exec-rel-'));
  const root = mkdtempSync(join(tmpdir(), 'vmkit-exec-root-'));
  t.teardown(() => {
    rmSync(releases, { recursive: true, force: true });
    rmSync(root, { recursive: true, force: true });
  });
  const bytes = randomBytes(300_000);
  mkdirSync(join(releases, '1.1.0', 'linux-x64'), { recursive: true });
  writeFileSync(join(releases, '1.1.0', 'linux-x64', 'vmkit-agent'), bytes);
  const cp = await startTestControlPlane({ config: { agentReleasesDir: releases } });
  t.teardown(() => cp.close());
  mkdirSync(join(root, 'versions', '1.0.0'), { recursive: true });
  writeFileSync(join(root, 'versions', '1.0.0', 'vmkit-agent'), 'running', { mode: 0o755 });
  symlinkSync('versions/1.0.0', join(root, 'current'));
  const state = join(root, 'state');
  mkdirSync(state, { mode: 0o700 });
  const pinned = cp.ctx.keyRing?.published() ?? [];
  const r: Rig = {
    cp,
    root,
    state,
    bytes,
    pinned,
    env: (over = {}) => ({
      markerFile: join(state, 'update.json'),
      controlPlaneUrls: [`${cp.url}/`],
      confirmWithinMs: 60_000,
      version: '1.0.0',
      execPath: join(root, 'versions', '1.0.0', 'vmkit-agent'),
      platform: 'linux-x64',
      checkRuns: () => Promise.resolve(),
      ...over,
    }),
    params: (over = {}) => ({
      version: '1.1.0',
      platform: 'linux-x64',
      url: `${cp.url}/${releaseArtifactPath('1.1.0', 'linux-x64')}`,
      sha256: sha(bytes),
      size: bytes.length,
      ...over,
    }),
    async run(params, env = r.env(), keys = pinned) {
      const command = { id: newId('command'), type: 'agent.update', params } as unknown as Extract<CommandEnvelope, { type: 'agent.update' }>;
      const ctx: ExecutorContext<'agent.update'> = {
        command,
        progress: () => undefined,
        signal: new AbortController().signal,
        log: quiet,
        keys: { keyIds: () => keys.map((k) => k.key_id), list: () => keys, replace: () => Promise.resolve() },
      };
      return (await agentUpdateExecutor(env).run(params, ctx));
    },
    untouched(t) {
      t.same(readdirSync(join(root, 'versions')), ['1.0.0'], 'no version added, no staging folder left');
      t.equal(readlinkSync(join(root, 'current')), 'versions/1.0.0', 'current unchanged');
      t.notOk(existsSync(join(state, 'update.json')), 'no marker');
    },
  };
  return r;
}

t.test('a verified release is staged, the marker written and current switched; the result waits for the restart', async (t) => {
  const r = await rig(t);
  const out = await r.run(r.params());
  t.same(out, { status: 'deferred' });
  t.equal(readlinkSync(join(r.root, 'current')), 'versions/1.1.0');
  t.ok(readFileSync(join(r.root, 'versions', '1.1.0', 'vmkit-agent')).equals(r.bytes));
  const m = await readMarker(join(r.state, 'update.json'));
  t.match(m, { from_version: '1.0.0', to_version: '1.1.0', root: r.root, state: 'pending', starts: 0 });
  t.equal((m?.confirm_by ?? 0) - (m?.switched_at ?? 0), 60_000);
});

t.test('refusals before any download', async (t) => {
  const r = await rig(t);
  const cases: [string, AgentUpdateParams, UpdateEnv, RegExp][] = [
    ['another platform', r.params({ platform: 'linux-arm64' }), r.env(), /this agent runs on linux-x64, the release is for linux-arm64/],
    ['an older version', r.params({ version: '0.9.0' }), r.env(), /0\.9\.0 is older than the running 1\.0\.0; a downgrade needs allow_downgrade: true/],
    ['a URL on another host', r.params({ url: `http://127.0.0.2:1/${releaseArtifactPath('1.1.0', 'linux-x64')}` }), r.env(), /this agent downloads only from its own control plane/],
    ['a URL for another file of the control plane', r.params({ url: `${r.cp.url}/install.sh` }), r.env(), /the release URL must be http:\/\/127\.0\.0\.1:\d+\/agent\/releases\/1\.1\.0\/linux-x64\/vmkit-agent/],
    ['an agent not installed as a release', r.params(), r.env({ execPath: process.execPath }), /this agent cannot update itself: this agent runs from/],
  ];
  for (const [name, params, env, why] of cases) {
    const out = await r.run(params, env);
    t.equal(out.status, 'failed', name);
    t.equal(out.error?.key, 'update_refused', name);
    t.match(out.error?.message, why, name);
  }
  await writeMarker(join(r.state, 'update.json'), {
    version: 1,
    command_id: newId('command'),
    from_version: '0.9.0',
    to_version: '1.0.0',
    root: r.root,
    switched_at: 1,
    confirm_by: 2,
    starts: 1,
    state: 'pending',
  });
  const busy = await r.run(r.params());
  t.match(busy.error?.message, /an update to 1\.0\.0 .* is still in progress/);
  rmSync(join(r.state, 'update.json'));
  r.untouched(t);
});

t.test('any of the agent\'s control planes may name the release; the download comes from the one named', async (t) => {
  const r = await rig(t);
  // The agent dials two processes of one fleet; the one sending the update names its own URL.
  const env = r.env({ controlPlaneUrls: ['https://cp-a.example/', `${r.cp.url}/`] });
  const out = await r.run(r.params(), env);
  t.same(out, { status: 'deferred' }, 'the second control plane of the set is accepted');
  t.ok(readFileSync(join(r.root, 'versions', '1.1.0', 'vmkit-agent')).equals(r.bytes), 'and downloaded from');
  const other = await rig(t);
  const refused = await other.run(other.params({ url: `https://cp-c.example/${releaseArtifactPath('1.1.0', 'linux-x64')}` }), other.env({ controlPlaneUrls: ['https://cp-a.example/', `${other.cp.url}/`] }));
  t.equal(refused.error?.key, 'update_refused');
  t.match(refused.error?.message, /the release URL must be https:\/\/cp-a\.example\/agent\/releases\/1\.1\.0\/linux-x64\/vmkit-agent or http:\/\/127\.0\.0\.1:\d+\/agent\/releases\/1\.1\.0\/linux-x64\/vmkit-agent: this agent downloads only from its own control planes/);
  other.untouched(t);
});

t.test('the same version is a success that changes nothing', async (t) => {
  const r = await rig(t);
  const out = await r.run(r.params({ version: '1.0.0', url: `${r.cp.url}/${releaseArtifactPath('1.0.0', 'linux-x64')}` }));
  t.same(out, { status: 'succeeded', output: { version: '1.0.0', previous_version: '1.0.0', changed: false } });
  r.untouched(t);
});

t.test('a manifest that does not verify or names another release is refused', async (t) => {
  const r = await rig(t);
  const attacker = fixtureKey('attacker');
  const cases: [string, AgentUpdateParams, SigningKey[], RegExp][] = [
    ['signed by a key that is not pinned', r.params(), [{ key_id: attacker.keyId, public_key: attacker.publicKey }], /refused \(unknown_key\)/],
    ['another sha-256 than the command', r.params({ sha256: 'e'.repeat(64) }), r.pinned, /the signed manifest says sha256 [0-9a-f]{64}, the command e{64}/],
    ['another size than the command', r.params({ size: r.bytes.length + 1 }), r.pinned, /the signed manifest says size 300000, the command 300001/],
  ];
  for (const [name, params, keys, why] of cases) {
    const out = await r.run(params, r.env(), keys);
    t.equal(out.error?.key, 'update_verification_failed', name);
    t.match(out.error?.message, why, name);
  }
  const missing = await r.run(r.params({ version: '1.2.0', url: `${r.cp.url}/${releaseArtifactPath('1.2.0', 'linux-x64')}` }));
  t.equal(missing.error?.key, 'update_download_failed');
  t.match(missing.error?.message, /HTTP 404/);
  r.untouched(t);
});

t.test('an executable that does not run here is not installed', async (t) => {
  const r = await rig(t);
  const out = await r.run(r.params(), r.env({ checkRuns: () => Promise.reject(new UpdateError('update_verification_failed', 'the new executable does not run here: exec format error')) }));
  t.equal(out.error?.key, 'update_verification_failed');
  r.untouched(t);
});

t.test('what a man in the middle changes in the executable is refused', async (t) => {
  const r = await rig(t);
  type Change = (body: Buffer) => { body: Buffer; chunked?: boolean };
  let change: Change = (b) => ({ body: b });
  const server = createServer((req, res) => {
    void (async () => {
      const up = await fetch(r.cp.url + (req.url ?? '/'));
      const body = Buffer.from(await up.arrayBuffer());
      const out = req.url?.endsWith('/vmkit-agent') ? change(body) : { body };
      res.writeHead(up.status, { 'content-type': up.headers.get('content-type') ?? 'application/octet-stream', ...(out.chunked ? {} : { 'content-length': String(out.body.length) }) });
      res.end(out.body);
    })().catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
  const addr = server.address();
  const base = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}/`;
  const env = r.env({ controlPlaneUrls: [base] });
  const params = r.params({ url: releaseUrls(base, '1.1.0', 'linux-x64').artifact });
  const cases: [string, Change, RegExp][] = [
    ['one byte flipped', (b) => ({ body: Buffer.concat([b.subarray(0, 10), Buffer.from([(b[10] ?? 0) ^ 1]), b.subarray(11)]) }), /the download's sha-256 is [0-9a-f]{64}, the signed manifest names/],
    ['a longer body with its length', (b) => ({ body: Buffer.concat([b, Buffer.alloc(10)]) }), /the control plane announces 300010 bytes, the signed manifest 300000/],
    ['a longer body sent chunked', (b) => ({ body: Buffer.concat([b, Buffer.alloc(70_000)]), chunked: true }), /the download runs past the 300000 bytes the signed manifest names/],
    ['a shorter body sent chunked', (b) => ({ body: b.subarray(0, 1000), chunked: true }), /the download is 1000 bytes, the signed manifest names 300000/],
  ];
  for (const [name, c, why] of cases) {
    change = c;
    const out = await r.run(params, env);
    t.equal(out.error?.key, 'update_verification_failed', name);
    t.match(out.error?.message, why, name);
  }
  r.untouched(t);
  change = (b) => ({ body: b });
  t.same(await r.run(params, env), { status: 'deferred' }, 'unchanged, through the same proxy, it is installed');
});
