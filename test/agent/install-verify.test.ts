import { execFile } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, rmSync, statSync, symlinkSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import type { Test } from 'tap';
import { signReleaseManifest } from '@vmkit/protocol';
import type { AgentReleaseManifest } from '@vmkit/protocol';
import { agentArtifact, artifactSkipReason, releasesDir, stopInstalledAgent } from '../helpers/agent-artifact.ts';
import type { AgentArtifact } from '../helpers/agent-artifact.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { waitAgentState } from '../helpers/real-agent.ts';
import { fixtureKey } from '../helpers/fixtures.ts';
import { freePort } from '../helpers/cp-process.ts';
import { makeTestCa, opensslMissing } from '../helpers/test-ca.ts';
import { startTlsFront } from '../helpers/tls-front.ts';
import { ROOT } from './agent-process.ts';

/**
 * scripts/install-agent.sh on this machine (a temp prefix, no systemd here): it installs
 * the executable a real control plane serves after checking the manifest's signature
 * under VMKIT_CP_KEY and the download's size and sha-256, and refuses — changing nothing
 * — whatever a man in the middle (a proxy in front of the control plane) alters. With
 * VMKIT_CP_URLS it passes a dead control plane over (download and enrollment) and leaves
 * every URL in the agent's config; with VMKIT_CA_FILE it downloads over https:// from a
 * control plane behind a private CA (curl and wget) and the agent connects on wss://.
 */

const SCRIPT = join(ROOT, 'scripts', 'install-agent.sh');
const noInstall =
  prerequisite(artifactSkipReason) ||
  prerequisite(process.getuid?.() !== 0 && 'needs root (the script refuses to run otherwise)') ||
  (existsSync('/run/systemd/system') && 'this machine runs systemd; the script would install a real unit');

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

function runProgram(file: string, args: string[], env: Record<string, string>): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(file, args, { env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', ...env }, timeout: 180_000, maxBuffer: 4 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

const runScript = (url: string, token: string, env: Record<string, string>): Promise<Ran> => runProgram('bash', [SCRIPT, url, token], env);

interface Site {
  cp: TestControlPlane;
  artifact: AgentArtifact;
  cpKey: string;
  instanceId: string;
  token: string;
}

async function site(t: Test, opts: { publicUrl?: string } = {}): Promise<Site> {
  const artifact = await agentArtifact();
  const cp = await startTestControlPlane({
    config: { agentReleasesDir: releasesDir(t, [artifact]), agentHub: { heartbeatIntervalMs: 500, deadAfterMs: 5_000 }, ...(opts.publicUrl ? { publicUrl: opts.publicUrl } : {}) },
  });
  t.teardown(() => cp.close());
  const key = cp.ctx.keyRing?.active();
  if (!key) throw new Error('no key ring');
  const { instanceId, token, installCommand } = await newInstance(cp);
  t.match(installCommand, `VMKIT_CP_KEY=${key.keyId}:${key.publicKey}`, 'the install command carries the key out of band');
  return { cp, artifact, cpKey: `${key.keyId}:${key.publicKey}`, instanceId, token };
}

/** Another instance of the site's control plane and its one-time token. */
async function newInstance(cp: TestControlPlane): Promise<{ instanceId: string; token: string; installCommand: string }> {
  const inst = (await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: `install-${process.pid}-${Math.random().toString(36).slice(2, 8)}` } })).body;
  const tok = (await cp.api<{ token: string; install_command: string }>('POST', `/api/instances/${inst.id}/enrollment-token`)).body;
  return { instanceId: inst.id, token: tok.token, installCommand: tok.install_command };
}

/** Paths of one install under a temp dir; the restart loop's process group is ended at teardown. */
function layout(t: Test) {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-install-'));
  const paths = {
    dir,
    prefix: join(dir, 'opt', 'vmkit-agent'),
    config: join(dir, 'etc', 'agent.json'),
    state: join(dir, 'state'),
    log: join(dir, 'agent.log'),
    pidFile: join(dir, 'agent.pid'),
  };
  t.teardown(async () => {
    await stopInstalledAgent(paths.pidFile);
    rmSync(dir, { recursive: true, force: true });
  });
  const env = {
    VMKIT_AGENT_PREFIX: paths.prefix,
    VMKIT_AGENT_CONFIG: paths.config,
    VMKIT_AGENT_STATE_DIR: paths.state,
    VMKIT_AGENT_LOG: paths.log,
    VMKIT_AGENT_PIDFILE: paths.pidFile,
    VMKIT_INSTALL_SKIP_APT: '1',
  };
  return { ...paths, env };
}

t.test('install.sh installs the served executable under versions/<v>, points current at it, enrolls and runs it', { skip: noInstall }, async (t) => {
  const s = await site(t);
  const l = layout(t);
  const r = await runScript(s.cp.url, s.token, { ...l.env, VMKIT_CP_KEY: s.cpKey });
  t.equal(r.code, 0, r.stderr);
  const v = s.artifact.manifest.version;
  t.match(r.stdout, `manifest of vmkit-agent ${v} for linux-x64: signature verified under ${s.cpKey.split(':').slice(0, 2).join(':')}`);
  t.match(r.stdout, `verified: size, sha-256 ${s.artifact.manifest.sha256}`);
  t.match(r.stdout, /systemd: skipped/);
  t.match(r.stdout, /enrolled as agt_/);
  t.match(r.stdout, /connected/);
  const exe = join(l.prefix, 'versions', v, 'vmkit-agent');
  t.equal(statSync(exe).mode & 0o777, 0o755);
  t.equal(createHash('sha256').update(readFileSync(exe)).digest('hex'), s.artifact.manifest.sha256, 'the served bytes');
  t.ok(lstatSync(join(l.prefix, 'current')).isSymbolicLink());
  t.equal(readlinkSync(join(l.prefix, 'current')), `versions/${v}`, 'current is a relative link to the version');
  t.equal(statSync(join(l.state, 'agent.key')).mode & 0o777, 0o600);
  t.same((JSON.parse(readFileSync(l.config, 'utf8')) as { signing_keys: { key_id: string }[] }).signing_keys.map((k) => k.key_id), [s.cpKey.split(':').slice(0, 2).join(':')], 'pinned exactly VMKIT_CP_KEY');
  await waitAgentState(s.cp, s.instanceId, 'connected');
  const inst = await s.cp.api<{ agent: { agent_version: string } }>('GET', `/api/instances/${s.instanceId}`);
  t.equal(inst.body.agent.agent_version, v);

  await t.test('the restart loop stands in for systemd: a killed agent comes back', async (t) => {
    const status = JSON.parse(readFileSync(join(l.state, 'status.json'), 'utf8')) as { pid: number };
    process.kill(status.pid, 'SIGKILL');
    for (let i = 0; i < 400; i++) {
      const now = JSON.parse(readFileSync(join(l.state, 'status.json'), 'utf8')) as { pid: number; state: string };
      if (now.pid !== status.pid && now.state === 'connected') break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const now = JSON.parse(readFileSync(join(l.state, 'status.json'), 'utf8')) as { pid: number; state: string };
    t.not(now.pid, status.pid, 'another process');
    t.equal(now.state, 'connected');
  });
});

t.test('install.sh refuses to run without the control plane key', async (t) => {
  const r = await runScript('http://127.0.0.1:9', 'vmkenr_x', { VMKIT_CP_KEY: '' });
  t.equal(r.code, 1);
  t.match(r.stderr, /VMKIT_CP_KEY must be the control plane's signing key/);
  const bad = await runScript('http://127.0.0.1:9', 'vmkenr_x', { VMKIT_CP_KEY: 'ed25519:00:abc' });
  t.equal(bad.code, 1);
});

type Mutation = (path: string, body: Buffer) => { body: Buffer; chunked?: boolean } | undefined;

/** A man in the middle: forwards to the control plane and rewrites what `mutate` returns. */
async function proxy(t: Test, target: string, mutate: Mutation): Promise<string> {
  const server: Server = createServer((req, res) => {
    void (async () => {
      const up = await fetch(target + (req.url ?? '/'));
      const body = Buffer.from(await up.arrayBuffer());
      const changed = mutate(req.url ?? '/', body);
      const out = changed?.body ?? body;
      // Without a length node sends the body chunked.
      res.writeHead(up.status, { 'content-type': up.headers.get('content-type') ?? 'application/octet-stream', ...(changed?.chunked ? {} : { 'content-length': String(out.length) }) });
      res.end(out);
    })().catch(() => res.destroy());
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  const addr = server.address();
  if (addr === null || typeof addr === 'string') throw new Error('no address');
  return `http://127.0.0.1:${addr.port}`;
}

const isManifest = (path: string) => /^\/agent\/releases\/[^/]+\/linux-x64$/.test(path);
const isArtifact = (path: string) => path.endsWith('/vmkit-agent');
const editManifest = (body: Buffer, edit: (m: AgentReleaseManifest) => AgentReleaseManifest) =>
  Buffer.from(JSON.stringify(edit(JSON.parse(body.toString('utf8')) as AgentReleaseManifest)));

t.test('whatever is altered on the way is refused, and nothing on the machine changes', { skip: noInstall }, async (t) => {
  const s = await site(t);
  const active = s.cp.ctx.keyRing?.active();
  if (!active) throw new Error('no key');
  const cases: [string, Mutation, RegExp][] = [
    [
      'one byte of the executable flipped',
      (p, b) => {
        if (!isArtifact(p)) return undefined;
        const copy = Buffer.from(b);
        copy[copy.length >> 1] = (copy[copy.length >> 1] ?? 0) ^ 0x01;
        return { body: copy };
      },
      /the download's sha-256 is [0-9a-f]{64}, the signed manifest says/,
    ],
    [
      'a correctly signed manifest naming another sha-256',
      (p, b) => (isManifest(p) ? { body: editManifest(b, (m) => signReleaseManifest(active, { ...m, sha256: 'e'.repeat(64) })) } : undefined),
      /the download's sha-256 is [0-9a-f]{64}, the signed manifest says e{64}/,
    ],
    [
      'a manifest whose sha-256 was changed after signing',
      (p, b) => (isManifest(p) ? { body: editManifest(b, (m) => ({ ...m, sha256: 'e'.repeat(64) })) } : undefined),
      /signature does not verify under ed25519:/,
    ],
    [
      'a manifest signed by another key under the right key id',
      (p, b) => (isManifest(p) ? { body: editManifest(b, (m) => ({ ...signReleaseManifest(fixtureKey('attacker'), m), key_id: m.key_id })) } : undefined),
      /signature does not verify under ed25519:/,
    ],
    [
      'a manifest signed by a key that is not VMKIT_CP_KEY',
      (p, b) => (isManifest(p) ? { body: editManifest(b, (m) => signReleaseManifest(fixtureKey('attacker'), m)) } : undefined),
      /the manifest is signed by ed25519:[0-9a-f]{32}, not by VMKIT_CP_KEY/,
    ],
    [
      'an executable larger than the manifest says',
      (p, b) => (isArtifact(p) ? { body: Buffer.concat([b, Buffer.alloc(4096, 0x90)]) } : undefined),
      /download of .*\/vmkit-agent failed or was larger than \d+ bytes/,
    ],
    [
      'a larger executable sent without a length (chunked)',
      (p, b) => (isArtifact(p) ? { body: Buffer.concat([b, Buffer.alloc(1 << 20, 0x90)]), chunked: true } : undefined),
      /download of .*\/vmkit-agent failed or was larger than \d+ bytes|vmkit-agent is \d+ bytes, more than the \d+ expected/,
    ],
  ];
  for (const [name, mutate, why] of cases) {
    await t.test(name, async (t) => {
      const url = await proxy(t, s.cp.url, mutate);
      const l = layout(t);
      const r = await runScript(url, s.token, { ...l.env, VMKIT_CP_KEY: s.cpKey });
      t.equal(r.code, 1, 'refused');
      t.match(r.stderr, why);
      t.notOk(existsSync(l.prefix), 'nothing installed');
      t.notOk(existsSync(l.config), 'not enrolled');
      t.notOk(existsSync(l.state), 'no state');
      t.notOk(existsSync(l.pidFile), 'nothing started');
    });
  }
  const inst = await s.cp.api<{ agent: unknown }>('GET', `/api/instances/${s.instanceId}`);
  t.equal(inst.body.agent, null, 'the token was never used');
});

interface InstalledConfig {
  control_plane_url: string;
  connect_url: string;
  connect_urls?: string[];
  ca_file?: string;
}
const configOf = (file: string) => JSON.parse(readFileSync(file, 'utf8')) as InstalledConfig;

/** Two ports nothing listens on: control-plane processes that are down. */
async function deadPorts(): Promise<[number, number]> {
  const a = await freePort();
  let b = await freePort();
  while (b === a) b = await freePort();
  return [a, b];
}

t.test('several control planes: a dead first URL is passed over for the download and the enrollment, and every URL is kept for the agent', { skip: noInstall }, async (t) => {
  const s = await site(t);
  const l = layout(t);
  const [d1, d2] = await deadPorts();
  const cpPort = new URL(s.cp.url).port;
  const r = await runScript(`http://127.0.0.1:${d1}`, s.token, { ...l.env, VMKIT_CP_KEY: s.cpKey, VMKIT_CP_URLS: `${s.cp.url}/ http://127.0.0.1:${d2}` });
  t.equal(r.code, 0, r.stderr);
  t.match(r.stderr, `download of http://127.0.0.1:${d1}/agent/releases/latest/linux-x64 failed`, 'the dead one was asked first');
  t.match(r.stdout, `downloading ${s.cp.url}/agent/releases/${s.artifact.manifest.version}/linux-x64/vmkit-agent`, 'the executable from the one that served the manifest');
  t.match(r.stdout, /enrolled as agt_/);
  const config = configOf(l.config);
  t.equal(config.control_plane_url, `${s.cp.url}/`, 'the control plane that answered the enrollment');
  t.equal(config.connect_url, `ws://127.0.0.1:${cpPort}/agent/v1/connect`, 'its announced connect URL first');
  t.same(config.connect_urls, [`ws://127.0.0.1:${d1}/agent/v1/connect`, `ws://127.0.0.1:${d2}/agent/v1/connect`], 'the others in connect_urls, in the order given');
  t.notOk('ca_file' in config, 'no ca_file without VMKIT_CA_FILE');
  await waitAgentState(s.cp, s.instanceId, 'connected');
});

/** A PATH with everything of /usr/bin but curl: the script's wget branch. */
function pathWithoutCurl(dir: string): string {
  const bin = join(dir, 'bin-without-curl');
  mkdirSync(bin);
  for (const name of readdirSync('/usr/bin')) if (name !== 'curl') symlinkSync(join('/usr/bin', name), join(bin, name));
  return `${bin}:/usr/sbin:/sbin`;
}

const noTls = noInstall || prerequisite(await opensslMissing()) || prerequisite(existsSync('/usr/bin/wget') ? false : 'wget is not installed (apt-get install wget)');

t.test('a private CA (VMKIT_CA_FILE): the downloads and the agent trust it, over https:// and wss://', { skip: noTls }, async (t) => {
  const caDir = mkdtempSync(join(tmpdir(), 'vmkit-install-ca-'));
  t.teardown(() => rmSync(caDir, { recursive: true, force: true }));
  const ca = await makeTestCa(caDir);
  let cpUrl = '';
  const { url: front, port } = await startTlsFront(t, ca, () => cpUrl);
  const s = await site(t, { publicUrl: front });
  cpUrl = s.cp.url;

  await t.test('without it the system roots refuse the certificate, and nothing changes', async (t) => {
    const l = layout(t);
    const r = await runScript(front, s.token, { ...l.env, VMKIT_CP_KEY: s.cpKey });
    t.equal(r.code, 1, 'refused');
    t.match(r.stderr, /curl: \(60\)|certificate/i, "curl's verification failure");
    t.match(r.stderr, /no control plane served the release manifest/);
    t.notOk(existsSync(l.prefix), 'nothing installed');
    t.notOk(existsSync(l.config), 'not enrolled');
  });

  const check = async (t: Test, l: ReturnType<typeof layout>, r: Ran, instanceId: string) => {
    t.equal(r.code, 0, r.stderr);
    t.match(r.stdout, `downloading ${front}/agent/releases/${s.artifact.manifest.version}/linux-x64/vmkit-agent`);
    t.match(r.stdout, /enrolled as agt_/);
    const copy = join(l.dir, 'etc', 'ca.pem');
    t.match(r.stdout, `trusting the CA(s) of ${ca.caFile}, copied to ${copy}`);
    const st = statSync(copy);
    t.equal(st.mode & 0o777, 0o644, 'the copy is 0644');
    t.equal(st.uid, 0, 'owned by root');
    t.equal(readFileSync(copy, 'utf8'), readFileSync(ca.caFile, 'utf8'), 'the CA as given');
    const config = configOf(l.config);
    t.equal(config.ca_file, copy, 'enrolled with --ca-file: the copy beside the config, not the operator\'s file');
    t.equal(config.connect_url, `wss://127.0.0.1:${port}/agent/v1/connect`, 'the agent dials wss:// through the TLS front');
    await waitAgentState(s.cp, instanceId, 'connected');
    const status = JSON.parse(readFileSync(join(l.state, 'status.json'), 'utf8')) as { connect_url: string };
    t.equal(status.connect_url, config.connect_url, 'connected on wss:// trusting the private CA');
  };

  await t.test('with it, curl downloads over https:// and the agent connects on wss://', async (t) => {
    const l = layout(t);
    const r = await runScript(front, s.token, { ...l.env, VMKIT_CP_KEY: s.cpKey, VMKIT_CA_FILE: ca.caFile });
    await check(t, l, r, s.instanceId);
  });

  await t.test('with it, wget (no curl on the machine) downloads over https:// too', async (t) => {
    const l = layout(t);
    const other = await newInstance(s.cp);
    const path = pathWithoutCurl(l.dir);
    const which = await runProgram('bash', ['-c', 'command -v curl || command -v wget'], { PATH: path });
    t.match(which.stdout.trim(), /\/wget$/, 'only wget on that PATH');
    const r = await runScript(front, other.token, { ...l.env, PATH: path, VMKIT_CP_KEY: s.cpKey, VMKIT_CA_FILE: ca.caFile });
    await check(t, l, r, other.instanceId);
  });
});
