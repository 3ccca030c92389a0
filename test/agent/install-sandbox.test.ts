import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { updateInstance } from '../../control-plane/src/db/instances.ts';
import { agentArtifact, artifactSkipReason, releasesDir } from '../helpers/agent-artifact.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { sandboxSkipReason, startSandbox, sshRun } from '../helpers/sandbox.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { waitAgentState } from '../helpers/real-agent.ts';
import { makeTestCa, opensslMissing } from '../helpers/test-ca.ts';
import { startTlsFront } from '../helpers/tls-front.ts';

/**
 * The install path of a real VM, inside a local VM sandbox (namespaces, its own /etc,
 * /var, /run, no systemd, no registry, no node_modules): install.sh fetched from a real
 * control plane's /install.sh checks the signed manifest under VMKIT_CP_KEY, downloads
 * and checks the executable, installs it under versions/<v> with `current`, enrolls and
 * starts it (with a second, dead control-plane URL in VMKIT_CP_URLS, which ends up in
 * the agent's connect_urls); then the control plane hardens the VM through it.
 */

interface InstanceAnswer {
  agent: { id: string; state: string; hostname: string | null; agent_version: string | null } | null;
}

const ROOT_PASSWORD = 'install-sandbox-password';

/** What the sandbox's program (curl, then install.sh) printed so far. */
function readProgramLog(dir: string): string {
  try {
    return readFileSync(join(dir, 'program.log'), 'utf8');
  } catch {
    return '';
  }
}
/** A port inside the sandbox that nothing listens on (its loopback is its own). */
const DEAD_PORT = 9;

t.test('a sandbox VM installed from the served executable enrolls, connects and is hardened', { skip: prerequisite(sandboxSkipReason) || prerequisite(artifactSkipReason) }, async (t) => {
  const artifact = await agentArtifact();
  const cp = await startTestControlPlane({ config: { agentReleasesDir: releasesDir(t, [artifact]), agentHub: { heartbeatIntervalMs: 500, deadAfterMs: 5_000 } } });
  t.teardown(() => cp.close());
  const inst = (await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: 'install-sbx' } })).body;
  const tok = (await cp.api<{ token: string; install_command: string }>('POST', `/api/instances/${inst.id}/enrollment-token`)).body;
  const cpKey = /VMKIT_CP_KEY=(\S+)/.exec(tok.install_command)?.[1] ?? '';
  const hostConfigExisted = existsSync('/etc/vmkit/agent.json');
  const hostPrefixExisted = existsSync('/var/opt/vmkit-agent');

  const env = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    // /opt is the host's inside the sandbox; /var is the sandbox's own overlay.
    VMKIT_AGENT_PREFIX: '/var/opt/vmkit-agent',
    VMKIT_INSTALL_SKIP_APT: '1',
    VMKIT_CP_KEY: cpKey,
    // A second control plane of the fleet, down (nothing listens on the sandbox's own
    // loopback there): enroll passes it over and the agent keeps it in connect_urls.
    VMKIT_CP_URLS: `http://127.0.0.1:${DEAD_PORT}`,
  };
  const sb = await startSandbox(t, {
    instanceId: inst.id,
    name: 'install-sbx',
    rootPassword: ROOT_PASSWORD,
    // The enrollment makes the provider relay the loopback control plane into the sandbox.
    enrollment: { control_plane_url: cp.url, token: tok.token },
    program: {
      steps: [
        { argv: ['curl', '-fsS', '-o', '/root/install.sh', `${cp.url}/install.sh`], env },
        { argv: ['bash', '/root/install.sh', cp.url, tok.token], env },
      ],
    },
  });
  await updateInstance(cp.ctx.db, inst.id, { sshHost: sb.vm.address, sshPort: 22, status: 'running' });

  const deadline = Date.now() + 120_000;
  let agent: InstanceAnswer['agent'] = null;
  while (Date.now() < deadline) {
    agent = (await cp.api<InstanceAnswer>('GET', `/api/instances/${inst.id}`)).body.agent;
    if (agent?.state === 'connected') break;
    await new Promise((r) => setTimeout(r, 250));
  }
  const log = readProgramLog(sb.vm.dir);
  if (agent?.state !== 'connected') t.comment(`program.log:\n${log.slice(-3000)}`);
  t.equal(agent?.state, 'connected', 'the installed agent connected to the control plane');
  t.equal(agent?.hostname, 'install-sbx', 'it runs inside the sandbox');
  t.equal(agent?.agent_version, artifact.manifest.version);
  t.match(log, /signature verified under ed25519:/);
  t.match(log, /systemd: skipped/);
  t.match(log, /enrolled as agt_/);

  const inside = await sb.exec(['stat', '-c', '%a', '/etc/vmkit/agent.json', '/var/lib/vmkit-agent', '/var/lib/vmkit-agent/agent.key']);
  t.same(inside.stdout.trim().split('\n'), ['600', '700', '600'], 'config 0600, state dir 0700, key 0600 inside the sandbox');
  const config = JSON.parse((await sb.exec(['cat', '/etc/vmkit/agent.json'])).stdout) as { connect_url: string; connect_urls?: string[] };
  t.equal(config.connect_url, `ws://127.0.0.1:${new URL(cp.url).port}/agent/v1/connect`, 'URL answered the enrollment');
  t.same(config.connect_urls, [`ws://127.0.0.1:${DEAD_PORT}/agent/v1/connect`], 'VMKIT_CP_URLS kept for the agent to dial in turn');
  const link = await sb.exec(['readlink', '/var/opt/vmkit-agent/current']);
  t.equal(link.stdout.trim(), `versions/${artifact.manifest.version}`);
  const sum = await sb.exec(['sha256sum', `/var/opt/vmkit-agent/versions/${artifact.manifest.version}/vmkit-agent`]);
  t.equal(sum.stdout.split(' ')[0], artifact.manifest.sha256, 'the served executable, unchanged');
  // No node_modules were linked in and no registry was reached: the executable is all there is.
  const files = await sb.exec(['find', '/var/opt/vmkit-agent', '-type', 'f']);
  t.same(files.stdout.trim().split('\n').sort(), [`/var/opt/vmkit-agent/versions/${artifact.manifest.version}/vmkit-agent`], 'one file installed');
  t.equal(existsSync('/etc/vmkit/agent.json'), hostConfigExisted, "the host's /etc is untouched");
  t.equal(existsSync('/var/opt/vmkit-agent'), hostPrefixExisted, "and the host's /var");

  const before = await sshRun({ host: sb.vm.address, password: ROOT_PASSWORD }, 'id -un');
  t.equal(before.stdout.trim(), 'root', 'a fresh VM: root logs in with a password');
  const harden = await cp.api<{ status: string }>('POST', `/api/instances/${inst.id}/harden`, { body: { wait_ms: 120_000 } });
  t.equal(harden.status, 200, JSON.stringify(harden.body));
  t.equal(harden.body.status, 'hardened', 'hardened through the installed executable');
  const after = await sshRun({ host: sb.vm.address, password: ROOT_PASSWORD }, 'id -un').then(
    () => 'logged in',
    (err: unknown) => (err as Error).message,
  );
  t.match(after, /authentication methods failed|All configured authentication methods failed/i, 'root with a password is refused now');
});

t.test('a sandbox VM behind a private CA: VMKIT_CA_FILE lands in /etc/vmkit/ca.pem and the agent connects on wss://', { skip: prerequisite(sandboxSkipReason) || prerequisite(artifactSkipReason) || prerequisite(await opensslMissing()) }, async (t) => {
  const artifact = await agentArtifact();
  // On the host's /tmp, which the sandbox sees as the lower layer of its own /tmp.
  const caDir = mkdtempSync(join(tmpdir(), 'vmkit-sbx-ca-'));
  t.teardown(() => rmSync(caDir, { recursive: true, force: true }));
  const ca = await makeTestCa(caDir);
  let cpUrl = '';
  const front = await startTlsFront(t, ca, () => cpUrl);
  const cp = await startTestControlPlane({ config: { publicUrl: front.url, agentReleasesDir: releasesDir(t, [artifact]), agentHub: { heartbeatIntervalMs: 500, deadAfterMs: 5_000 } } });
  t.teardown(() => cp.close());
  cpUrl = cp.url;
  const inst = (await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: 'install-sbx-ca' } })).body;
  const tok = (await cp.api<{ token: string; install_command: string }>('POST', `/api/instances/${inst.id}/enrollment-token`)).body;
  t.match(tok.install_command, `bash -s -- ${front.url} vmkenr_`, 'the install command names the https:// front');
  const cpKey = /VMKIT_CP_KEY=(\S+)/.exec(tok.install_command)?.[1] ?? '';
  const hostCaExisted = existsSync('/etc/vmkit/ca.pem');
  const env = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    VMKIT_AGENT_PREFIX: '/var/opt/vmkit-agent',
    VMKIT_INSTALL_SKIP_APT: '1',
    VMKIT_CP_KEY: cpKey,
    VMKIT_CA_FILE: ca.caFile,
  };
  const sb = await startSandbox(t, {
    instanceId: inst.id,
    name: 'install-sbx-ca',
    // The provider relays the front's loopback port into the sandbox.
    enrollment: { control_plane_url: front.url, token: tok.token },
    program: {
      steps: [
        { argv: ['curl', '-fsS', '--cacert', ca.caFile, '-o', '/root/install.sh', `${front.url}/install.sh`], env },
        { argv: ['bash', '/root/install.sh', front.url, tok.token], env },
      ],
    },
  });
  const connected = await waitAgentState(cp, inst.id, 'connected', 120_000).then(
    () => true,
    () => false,
  );
  if (!connected) t.comment(`program.log:\n${readProgramLog(sb.vm.dir).slice(-3000)}`);
  t.ok(connected, 'the installed agent connected through the TLS front');
  t.match(readProgramLog(sb.vm.dir), `trusting the CA(s) of ${ca.caFile}, copied to /etc/vmkit/ca.pem`);
  const st = await sb.exec(['stat', '-c', '%a %U %G', '/etc/vmkit/ca.pem']);
  t.equal(st.stdout.trim(), '644 root root', 'root-owned, 0644, beside the config');
  const copy = await sb.exec(['cat', '/etc/vmkit/ca.pem']);
  t.equal(copy.stdout, readFileSync(ca.caFile, 'utf8'), 'the CA as given');
  const config = JSON.parse((await sb.exec(['cat', '/etc/vmkit/agent.json'])).stdout) as { ca_file?: string; connect_url: string };
  t.equal(config.ca_file, '/etc/vmkit/ca.pem', 'ca_file names the copy');
  t.equal(config.connect_url, `wss://127.0.0.1:${front.port}/agent/v1/connect`);
  const status = JSON.parse((await sb.exec(['cat', '/var/lib/vmkit-agent/status.json'])).stdout) as { state: string; connect_url: string };
  t.same({ state: status.state, connect_url: status.connect_url }, { state: 'connected', connect_url: config.connect_url }, 'connected on wss://');
  t.equal(existsSync('/etc/vmkit/ca.pem'), hostCaExisted, "the host's /etc is untouched");
});
