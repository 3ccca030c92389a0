// The cloud-init user data of a provisioned VM: the agent's URLs and private CA carried
// safely to install-agent.sh, and nothing changed for a control plane without them.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { BOOT_CA_FILE, ENROLL_ENV_FILE, agentCloudConfig } from '../../control-plane/src/providers/compute/cloud-init.ts';
import { HETZNER_USER_DATA_MAX_BYTES } from '../../control-plane/src/providers/compute/hetzner.ts';
import type { AgentEnrollment } from '../../control-plane/src/providers/compute/types.ts';

const run = promisify(execFile);

const ENROLLMENT: AgentEnrollment = {
  control_plane_url: 'https://cp.example.com/',
  token: 'vmkenr_0123456789abcdefghijklmnopqrstuv',
  control_plane_keys: ['ed25519:0123456789abcdef0123456789abcdef:MCowBQYDK2VwAyEAq83vEyT8Zf0xD3p0ZVyT4c9lTgo', 'k0:old'],
};
// Never parsed here: the control plane checked the file at start (readAgentCa).
const PEM = '-----BEGIN CERTIFICATE-----\nMIIBfzCCASWgAwIBAgIUTestOnly\n-----END CERTIFICATE-----\n';

interface CloudConfig {
  write_files: { path: string; permissions: string; owner: string; content: string }[];
  runcmd: string[][];
}

function parse(userData: string): CloudConfig {
  if (!userData.startsWith('#cloud-config\n')) throw new Error('not a cloud-config');
  return JSON.parse(userData.slice('#cloud-config\n'.length)) as CloudConfig;
}

const installLine = (c: CloudConfig): string => c.runcmd.find((r) => r[0] === 'sh')?.[2] ?? '';

t.test('without agent URLs or a CA the user data is byte for byte what it was', async (t) => {
  const expected = readFileSync(new URL('../fixtures/cloud-init/agent-no-ca.yaml', import.meta.url), 'utf8');
  t.equal(agentCloudConfig(ENROLLMENT, 'shop-staging-abcdefgh'), expected);
  t.equal(agentCloudConfig({ ...ENROLLMENT, more_control_plane_urls: [] }, 'shop-staging-abcdefgh'), expected, 'an empty list is no list');
});

t.test('a CA is written root-owned 0644 to a boot path, exactly as given, and the first fetch trusts it', async (t) => {
  const config = parse(agentCloudConfig({ ...ENROLLMENT, ca_pem: PEM }, 'vm-1'));
  const ca = config.write_files.find((f) => f.path === BOOT_CA_FILE);
  t.same(ca, { path: BOOT_CA_FILE, permissions: '0644', owner: 'root:root', content: PEM });
  const env = config.write_files.find((f) => f.path === ENROLL_ENV_FILE)?.content ?? '';
  t.match(env, `VMKIT_CA_FILE='${BOOT_CA_FILE}'\n`, 'install-agent.sh is told where it is');
  t.notMatch(env, 'VMKIT_CP_URLS', 'no other URLs were given');
  const line = installLine(config);
  t.match(line, 'curl -fsSL --retry 5 --retry-connrefused --cacert "$VMKIT_CA_FILE" "$VMKIT_CONTROL_PLANE_URL/install.sh"', 'install.sh itself is fetched trusting the CA');
  t.match(line, `rm -f ${ENROLL_ENV_FILE} /run/vmkit-install.sh ${BOOT_CA_FILE}; exit $rc`, 'the boot copy goes (install-agent.sh keeps its own in /etc/vmkit/ca.pem)');
  t.notMatch(line, 'BEGIN CERTIFICATE', 'the PEM is not in the shell line');
});

t.test('the fleet\'s other URLs go to VMKIT_CP_URLS, after the first, without duplicates', async (t) => {
  const config = parse(
    agentCloudConfig(
      { ...ENROLLMENT, control_plane_url: 'https://cp-a.example.com', more_control_plane_urls: ['https://cp-b.example.com/', 'https://cp-a.example.com', 'https://[2001:db8::1]:8443', 'https://cp-b.example.com'], ca_pem: PEM },
      'vm-1',
    ),
  );
  const env = config.write_files.find((f) => f.path === ENROLL_ENV_FILE)?.content ?? '';
  t.match(env, "VMKIT_CONTROL_PLANE_URL='https://cp-a.example.com'\n");
  t.match(env, "VMKIT_CP_URLS='https://cp-b.example.com https://[2001:db8::1]:8443'\n");
  t.notMatch(installLine(config), /cp-[ab]\.example\.com/, 'no URL is written into the shell line, only variables');
});

t.test('the env file, sourced as the install step does, yields exactly the values', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-cloud-init-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const config = parse(agentCloudConfig({ ...ENROLLMENT, more_control_plane_urls: ['https://cp-b.example.com', 'https://cp-c.example.com:8443/base'], ca_pem: PEM }, 'vm-1'));
  const file = join(dir, 'enroll.env');
  writeFileSync(file, config.write_files.find((f) => f.path === ENROLL_ENV_FILE)?.content ?? '');
  // A real POSIX sh, and the same `set -a; . file; set +a` as the runcmd line.
  const { stdout } = await run('sh', ['-c', 'set -a && . "$1" && set +a && env | grep "^VMKIT_" | sort', 'sh', file], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin' } });
  t.same(stdout.trim().split('\n'), [
    `VMKIT_CA_FILE=${BOOT_CA_FILE}`,
    'VMKIT_CONTROL_PLANE_URL=https://cp.example.com',
    'VMKIT_CP_KEY=ed25519:0123456789abcdef0123456789abcdef:MCowBQYDK2VwAyEAq83vEyT8Zf0xD3p0ZVyT4c9lTgo',
    'VMKIT_CP_URLS=https://cp-b.example.com https://cp-c.example.com:8443/base',
    'VMKIT_ENROLLMENT_TOKEN=vmkenr_0123456789abcdefghijklmnopqrstuv',
  ]);
});

t.test('another URL that could leave its quotes is refused', async (t) => {
  for (const bad of ["https://cp-b.example.com/'$(reboot)'", 'https://cp-b.example.com https://evil', 'https://cp-b\n.example.com', 'ftp://cp-b.example.com']) {
    t.throws(() => agentCloudConfig({ ...ENROLLMENT, more_control_plane_urls: [bad] }, 'vm-1'), { name: 'ComputeError', key: 'invalid_request' }, JSON.stringify(bad));
  }
  t.throws(() => agentCloudConfig({ ...ENROLLMENT, ca_pem: 'not a certificate' }, 'vm-1'), { key: 'invalid_request', message: /not a PEM certificate/ });
});

t.test('a CA that makes the user data too big for the provider is a clear error, not a truncated VM', async (t) => {
  const body = 'A'.repeat(64);
  const big = `-----BEGIN CERTIFICATE-----\n${`${body}\n`.repeat(600)}-----END CERTIFICATE-----\n`;
  t.throws(() => agentCloudConfig({ ...ENROLLMENT, ca_pem: big }, 'vm-1', { maxBytes: HETZNER_USER_DATA_MAX_BYTES }), {
    name: 'ComputeError',
    key: 'provision_failed',
    message: new RegExp(`more than the provider's 32768: the agent CA \\(--agent-ca-file, ${Buffer.byteLength(big)} bytes\\) does not fit`),
  });
  t.ok(Buffer.byteLength(agentCloudConfig({ ...ENROLLMENT, ca_pem: big }, 'vm-1')) > HETZNER_USER_DATA_MAX_BYTES, 'without a limit (the local sandbox) it is made');
  t.ok(agentCloudConfig({ ...ENROLLMENT, ca_pem: PEM }, 'vm-1', { maxBytes: HETZNER_USER_DATA_MAX_BYTES }), 'a CA of a few certificates fits');
});
