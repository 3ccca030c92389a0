import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { sandboxSkipReason, startSandbox } from '../helpers/sandbox.ts';
import { ROOT } from './agent-process.ts';
import { prerequisite } from '../helpers/prereq.ts';

/**
 * The install script for real: inside a local VM sandbox (namespaces, its own /etc,
 * /var, /run, no systemd), fetched from a real control plane's /install.sh, which
 * downloads /agent/bundle.tar.gz, enrolls with a token and starts the daemon.
 */


interface InstanceAnswer {
  agent: { id: string; state: string; hostname: string | null; agent_version: string | null } | null;
}

t.test('inside a sandbox, install.sh from the control plane installs, enrolls and starts the agent; systemd is reported skipped', { skip: prerequisite(sandboxSkipReason) }, async (t) => {
  const cp = await startTestControlPlane({ config: { agentHub: { heartbeatIntervalMs: 500, deadAfterMs: 1_500 } } });
  t.teardown(() => cp.close());
  const inst = (await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: 'install-sbx' } })).body;
  const tok = (await cp.api<{ token: string }>('POST', `/api/instances/${inst.id}/enrollment-token`)).body;
  const hostConfigExisted = existsSync('/etc/vmkit/agent.json');
  const hostPrefixExisted = existsSync('/var/opt/vmkit-agent');

  const env = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    // /opt is the host's inside the sandbox; /var is the sandbox's own overlay.
    VMKIT_AGENT_PREFIX: '/var/opt/vmkit-agent',
    VMKIT_INSTALL_SKIP_APT: '1',
    // The sandbox has no registry access: the repository's node_modules stand in for npm.
    VMKIT_AGENT_NODE_MODULES: join(ROOT, 'node_modules'),
  };
  const sb = await startSandbox(t, {
    name: 'install-sbx',
    // The enrollment makes the provider relay the loopback control plane into the sandbox.
    enrollment: { control_plane_url: cp.url, token: tok.token },
    program: {
      steps: [
        { argv: ['curl', '-fsS', '-o', '/root/install.sh', `${cp.url}/install.sh`], env },
        { argv: ['bash', '/root/install.sh', cp.url, tok.token], env },
      ],
    },
  });

  const deadline = Date.now() + 90_000;
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
  t.match(log, /systemd: skipped/);
  t.match(log, /enrolled as agt_/);

  const inside = await sb.exec(['stat', '-c', '%a', '/etc/vmkit/agent.json', '/var/lib/vmkit-agent', '/var/lib/vmkit-agent/agent.key']);
  t.same(inside.stdout.trim().split('\n'), ['600', '700', '600'], 'config 0600, state dir 0700, key 0600 inside the sandbox');
  t.equal(existsSync('/etc/vmkit/agent.json'), hostConfigExisted, "the host's /etc is untouched");
  const bin = await sb.exec(['test', '-f', '/var/opt/vmkit-agent/vmkit-agent/bin/vmkit-agent.js']);
  t.equal(bin.code, 0, 'unpacked inside the sandbox');
  t.equal(existsSync('/var/opt/vmkit-agent'), hostPrefixExisted, "and not on the host's /var");
});
