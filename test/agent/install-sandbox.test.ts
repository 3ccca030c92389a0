import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { updateInstance } from '../../control-plane/src/db/instances.ts';
import { agentArtifact, artifactSkipReason, releasesDir } from '../helpers/agent-artifact.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { sandboxSkipReason, startSandbox, sshRun } from '../helpers/sandbox.ts';
import { prerequisite } from '../helpers/prereq.ts';

/**
 * The install path of a real VM, inside a local VM sandbox (namespaces, its own /etc,
 * /var, /run, no systemd, no registry, no node_modules): install.sh fetched from a real
 * control plane's /install.sh checks the signed manifest under VMKIT_CP_KEY, downloads
 * and checks the executable, installs it under versions/<v> with `current`, enrolls and
 * starts it; then the control plane hardens the VM through it.
 */

interface InstanceAnswer {
  agent: { id: string; state: string; hostname: string | null; agent_version: string | null } | null;
}

const ROOT_PASSWORD = 'install-sandbox-password';

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
  const log = (() => {
    try {
      return readFileSync(join(sb.vm.dir, 'program.log'), 'utf8');
    } catch {
      return '';
    }
  })();
  if (agent?.state !== 'connected') t.comment(`program.log:\n${log.slice(-3000)}`);
  t.equal(agent?.state, 'connected', 'the installed agent connected to the control plane');
  t.equal(agent?.hostname, 'install-sbx', 'it runs inside the sandbox');
  t.equal(agent?.agent_version, artifact.manifest.version);
  t.match(log, /signature verified under ed25519:/);
  t.match(log, /systemd: skipped/);
  t.match(log, /enrolled as agt_/);

  const inside = await sb.exec(['stat', '-c', '%a', '/etc/vmkit/agent.json', '/var/lib/vmkit-agent', '/var/lib/vmkit-agent/agent.key']);
  t.same(inside.stdout.trim().split('\n'), ['600', '700', '600'], 'config 0600, state dir 0700, key 0600 inside the sandbox');
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
