import { ComputeError } from './types.ts';
import type { AgentEnrollment } from './types.ts';

/** Where cloud-init leaves the enrollment settings for the install step; removed once it ran. */
export const ENROLL_ENV_FILE = '/etc/vmkit/enroll.env';

const SAFE_URL = /^https?:\/\/[A-Za-z0-9.:[\]/_~%-]+$/;
const SAFE_TOKEN = /^[A-Za-z0-9_.~-]+$/;
// Key ids carry their own colon (`ed25519:<hex>`); the agent splits at the last one.
const SAFE_KEY = /^[A-Za-z0-9_-]+(?::[A-Za-z0-9_-]+)?:[A-Za-z0-9+/=_-]+$/;

/**
 * Where cloud-init leaves a private CA for the install step (VMKIT_CA_FILE): install-agent.sh
 * copies it to /etc/vmkit/ca.pem for the agent, so this one goes with the env file.
 */
export const BOOT_CA_FILE = '/run/vmkit-ca.pem';

/**
 * The cloud-init user_data that turns a fresh Debian/Ubuntu cloud VM into a VMKit VM:
 *
 * - Docker from the distribution (`docker.io`): Kamal runs the app in containers and the
 *   non-root `kamal` user it deploys as cannot install Docker itself;
 * - the agent, through the control plane's own `/install.sh` (Node.js from the
 *   distribution, the agent bundle, `enroll`, the systemd unit), pinning the control
 *   plane's active signing key; with the fleet's other URLs (VMKIT_CP_URLS) and a
 *   private CA (VMKIT_CA_FILE, also for the first fetch of install.sh) when given.
 *
 * The enrollment token is in here because cloud-init is the only channel into a VM
 * nobody can log in to yet. Hetzner keeps user_data for the server's lifetime (its
 * metadata service hands it to any process on the VM), so the token must be
 * short-lived and single-use: once the agent enrolled, or the token expired, it opens
 * nothing. The env file that carries it to the install step is deleted afterwards.
 *
 * Emitted as JSON, which is YAML: no hand-written YAML quoting of values. The shell line
 * names only constant paths and variables from the env file, whose values are checked
 * against character sets that cannot leave their single quotes.
 */
export function agentCloudConfig(enrollment: AgentEnrollment, hostname: string, limits: { maxBytes?: number } = {}): string {
  const url = safeUrl(enrollment.control_plane_url);
  const more = (enrollment.more_control_plane_urls ?? []).map(safeUrl).filter((u, i, all) => u !== url && all.indexOf(u) === i);
  if (!SAFE_TOKEN.test(enrollment.token)) throw new ComputeError('invalid_request', 'The enrollment token has characters cloud-init cannot carry.');
  // install-agent.sh pins one key (VMKIT_CP_KEY): the active one, which comes first.
  const key = enrollment.control_plane_keys?.[0];
  if (key !== undefined && !SAFE_KEY.test(key)) throw new ComputeError('invalid_request', 'A control-plane signing key is not in KEY_ID:PUBLIC_KEY form.');
  const ca = enrollment.ca_pem;
  if (ca !== undefined && !ca.includes('-----BEGIN CERTIFICATE-----')) throw new ComputeError('invalid_request', 'The agent CA is not a PEM certificate.');
  const env = [
    `VMKIT_CONTROL_PLANE_URL='${url}'`,
    `VMKIT_ENROLLMENT_TOKEN='${enrollment.token}'`,
    ...(key ? [`VMKIT_CP_KEY='${key}'`] : []),
    ...(more.length > 0 ? [`VMKIT_CP_URLS='${more.join(' ')}'`] : []),
    ...(ca !== undefined ? [`VMKIT_CA_FILE='${BOOT_CA_FILE}'`] : []),
  ];
  const install = [
    'set -a',
    `. ${ENROLL_ENV_FILE}`,
    'set +a',
    // The first fetch trusts the private CA too: install.sh comes from the same control plane.
    `curl -fsSL --retry 5 --retry-connrefused${ca !== undefined ? ' --cacert "$VMKIT_CA_FILE"' : ''} "$VMKIT_CONTROL_PLANE_URL/install.sh" -o /run/vmkit-install.sh`,
    'bash /run/vmkit-install.sh "$VMKIT_CONTROL_PLANE_URL" "$VMKIT_ENROLLMENT_TOKEN"',
  ].join(' && ');
  const cleanup = [ENROLL_ENV_FILE, '/run/vmkit-install.sh', ...(ca !== undefined ? [BOOT_CA_FILE] : [])].join(' ');
  const config = {
    hostname,
    preserve_hostname: false,
    package_update: true,
    packages: ['ca-certificates', 'curl', 'docker.io'],
    write_files: [
      { path: ENROLL_ENV_FILE, permissions: '0600', owner: 'root:root', content: `${env.join('\n')}\n` },
      // A certificate is public: 0644 as install-agent.sh's copy of it.
      ...(ca !== undefined ? [{ path: BOOT_CA_FILE, permissions: '0644', owner: 'root:root', content: ca }] : []),
    ],
    runcmd: [
      ['systemctl', 'enable', '--now', 'docker'],
      ['sh', '-c', `${install}; rc=$?; rm -f ${cleanup}; exit $rc`],
    ],
  };
  const userData = `#cloud-config\n${JSON.stringify(config, null, 2)}\n`;
  const size = Buffer.byteLength(userData);
  if (limits.maxBytes !== undefined && size > limits.maxBytes) {
    const caBytes = ca === undefined ? 0 : Buffer.byteLength(ca);
    throw new ComputeError(
      'provision_failed',
      `The cloud-init user data is ${size} bytes, more than the provider's ${limits.maxBytes}` +
        (caBytes > 0
          ? `: the agent CA (--agent-ca-file, ${caBytes} bytes) does not fit. Give a file with only the CA certificate(s) the control plane's TLS certificate chains to.`
          : '.'),
    );
  }
  return userData;
}

function safeUrl(raw: string): string {
  const url = raw.replace(/\/+$/, '');
  if (!SAFE_URL.test(url)) throw new ComputeError('invalid_request', `The control plane URL ${JSON.stringify(url)} cannot be handed to a cloud VM.`);
  return url;
}
