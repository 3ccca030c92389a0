import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { agentCloudConfig, BOOT_CA_FILE, ENROLL_ENV_FILE } from '../../control-plane/src/providers/compute/cloud-init.ts';
import type { GuestStep } from '../../control-plane/src/providers/compute/local.ts';
import { agentDestination } from '../../control-plane/src/services/agent-destination.ts';
import { agentArtifact, artifactSkipReason, releasesDir } from '../helpers/agent-artifact.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { eventually } from '../helpers/cp-process.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { waitAgentState } from '../helpers/real-agent.ts';
import { sandboxSkipReason, startSandbox } from '../helpers/sandbox.ts';
import { makeTestCa, opensslMissing } from '../helpers/test-ca.ts';
import { startTlsFront } from '../helpers/tls-front.ts';

/**
 * The user data a cloud VM gets (agentCloudConfig, as Hetzner is sent it) run in a local
 * VM sandbox, the way cloud-init would: its write_files written as root with their modes,
 * then its install runcmd line (curl --cacert install.sh, install-agent.sh with
 * VMKIT_CA_FILE and VMKIT_CP_URLS), against a control plane behind a TLS front whose
 * certificate comes from a throwaway private CA. Left out: the package installs and
 * Docker (nothing here needs them; the sandbox has no apt and no systemd).
 */

interface CloudConfig {
  write_files: { path: string; permissions: string; owner: string; content: string }[];
  runcmd: string[][];
}

/** A port inside the sandbox nothing listens on: the fleet's second control plane, down. */
const DEAD_URL = 'https://127.0.0.1:9';

t.test('a sandbox VM booted from the cloud-init user data trusts the private CA and knows every agent URL', { skip: prerequisite(sandboxSkipReason) || prerequisite(artifactSkipReason) || prerequisite(await opensslMissing()) }, async (t) => {
  const artifact = await agentArtifact();
  // On the host's /tmp, which the sandbox sees as the lower layer of its own /tmp.
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-cloud-init-sbx-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const ca = await makeTestCa(dir);
  const pem = readFileSync(ca.caFile, 'utf8');
  let cpUrl = '';
  const front = await startTlsFront(t, ca, () => cpUrl);
  const cp = await startTestControlPlane({
    config: {
      publicUrl: front.url,
      agentUrls: [front.url, DEAD_URL],
      agentCa: { file: ca.caFile, pem },
      agentReleasesDir: releasesDir(t, [artifact]),
      agentHub: { heartbeatIntervalMs: 500, deadAfterMs: 5_000 },
    },
  });
  t.teardown(() => cp.close());
  cpUrl = cp.url;
  const inst = (await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: 'cloud-init-sbx' } })).body;
  const tok = (await cp.api<{ token: string; signing_keys: { key_id: string; public_key: string }[] }>('POST', `/api/instances/${inst.id}/enrollment-token`)).body;

  // What provisionInstance hands a provider, made into what Hetzner would be sent.
  const enrollment = { ...agentDestination(cp.ctx.config, cp.ctx.publicUrl), token: tok.token, control_plane_keys: tok.signing_keys.map((k) => `${k.key_id}:${k.public_key}`) };
  const config = JSON.parse(agentCloudConfig(enrollment, 'cloud-init-sbx').replace(/^#cloud-config\n/, '')) as CloudConfig;
  const steps: GuestStep[] = config.write_files.map((f, i) => {
    const staged = join(dir, `write-file-${i}`);
    writeFileSync(staged, f.content);
    t.equal(f.owner, 'root:root');
    return { argv: ['install', '-D', '-m', f.permissions, '-o', '0', '-g', '0', staged, f.path] };
  });
  const install = config.runcmd.find((c) => c[0] === 'sh');
  if (install === undefined) throw new Error('no install line in runcmd');
  steps.push({ argv: install });
  const env = {
    PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
    HOME: '/root',
    // /opt is the host's inside the sandbox; /var is the sandbox's own overlay.
    VMKIT_AGENT_PREFIX: '/var/opt/vmkit-agent',
    VMKIT_INSTALL_SKIP_APT: '1',
  };
  const sb = await startSandbox(t, {
    instanceId: inst.id,
    name: 'cloud-init-sbx',
    // The provider relays the front's loopback port into the sandbox.
    enrollment: { control_plane_url: front.url, token: tok.token },
    program: { steps: steps.map((s) => ({ ...s, env })) },
  });
  const log = (): string => {
    try {
      return readFileSync(join(sb.vm.dir, 'program.log'), 'utf8');
    } catch {
      return '';
    }
  };
  const connected = await waitAgentState(cp, inst.id, 'connected', 120_000).then(
    () => true,
    () => false,
  );
  if (!connected) t.comment(`program.log:\n${log().slice(-3000)}`);
  t.ok(connected, 'the agent installed by the user data connected through the TLS front');
  t.match(log(), `trusting the CA(s) of ${BOOT_CA_FILE}, copied to /etc/vmkit/ca.pem`);

  const st = await sb.exec(['stat', '-c', '%a %U %G', '/etc/vmkit/ca.pem']);
  t.equal(st.stdout.trim(), '644 root root');
  t.equal((await sb.exec(['cat', '/etc/vmkit/ca.pem'])).stdout, pem, 'the configured CA, byte for byte');
  const agentConfig = JSON.parse((await sb.exec(['cat', '/etc/vmkit/agent.json'])).stdout) as { ca_file?: string; connect_url: string; connect_urls?: string[] };
  t.equal(agentConfig.ca_file, '/etc/vmkit/ca.pem');
  t.equal(agentConfig.connect_url, `wss://127.0.0.1:${front.port}/agent/v1/connect`);
  t.same(agentConfig.connect_urls, ['wss://127.0.0.1:9/agent/v1/connect'], "the fleet's other URL, from VMKIT_CP_URLS");
  // The install line goes on after the agent connected (install-agent.sh waits for its status, then the cleanup runs).
  const last = `program step ${steps.length} exited (`;
  const supervisorLog = (): string => readFileSync(join(sb.vm.dir, 'supervisor.log'), 'utf8');
  await eventually('the install line to end', () => (supervisorLog().includes(last) ? true : undefined), 60_000);
  t.match(supervisorLog(), `${last}0)`, 'the install line exited 0');
  for (const gone of [ENROLL_ENV_FILE, BOOT_CA_FILE, '/run/vmkit-install.sh']) {
    t.not((await sb.exec(['test', '-e', gone])).code, 0, `${gone} was removed after the install step`);
  }
});
