import { ComputeError } from './types.ts';
import type { AgentEnrollment } from './types.ts';

/** Where cloud-init leaves the enrollment settings for the install step; removed once it ran. */
export const ENROLL_ENV_FILE = '/etc/vmkit/enroll.env';

const SAFE_URL = /^https?:\/\/[A-Za-z0-9.:[\]/_~%-]+$/;
const SAFE_TOKEN = /^[A-Za-z0-9_.~-]+$/;
// Key ids carry their own colon (`ed25519:<hex>`); the agent splits at the last one.
const SAFE_KEY = /^[A-Za-z0-9_-]+(?::[A-Za-z0-9_-]+)?:[A-Za-z0-9+/=_-]+$/;

/**
 * The cloud-init user_data that turns a fresh Debian/Ubuntu cloud VM into a VMKit VM:
 *
 * - Docker from the distribution (`docker.io`): Kamal runs the app in containers and the
 *   non-root `kamal` user it deploys as cannot install Docker itself;
 * - the agent, through the control plane's own `/install.sh` (Node.js from the
 *   distribution, the agent bundle, `enroll`, the systemd unit), pinning the control
 *   plane's active signing key.
 *
 * The enrollment token is in here because cloud-init is the only channel into a VM
 * nobody can log in to yet. Hetzner keeps user_data for the server's lifetime (its
 * metadata service hands it to any process on the VM), so the token must be
 * short-lived and single-use: once the agent enrolled, or the token expired, it opens
 * nothing. The env file that carries it to the install step is deleted afterwards.
 *
 * Emitted as JSON, which is YAML: no hand-written YAML quoting of values.
 */
export function agentCloudConfig(enrollment: AgentEnrollment, hostname: string): string {
  const url = enrollment.control_plane_url.replace(/\/+$/, '');
  if (!SAFE_URL.test(url)) throw new ComputeError('invalid_request', `The control plane URL ${JSON.stringify(url)} cannot be handed to a cloud VM.`);
  if (!SAFE_TOKEN.test(enrollment.token)) throw new ComputeError('invalid_request', 'The enrollment token has characters cloud-init cannot carry.');
  // install-agent.sh pins one key (VMKIT_CP_KEY): the active one, which comes first.
  const key = enrollment.control_plane_keys?.[0];
  if (key !== undefined && !SAFE_KEY.test(key)) throw new ComputeError('invalid_request', 'A control-plane signing key is not in KEY_ID:PUBLIC_KEY form.');
  const env = [`VMKIT_CONTROL_PLANE_URL='${url}'`, `VMKIT_ENROLLMENT_TOKEN='${enrollment.token}'`, ...(key ? [`VMKIT_CP_KEY='${key}'`] : [])];
  const install = [
    'set -a',
    `. ${ENROLL_ENV_FILE}`,
    'set +a',
    'curl -fsSL --retry 5 --retry-connrefused "$VMKIT_CONTROL_PLANE_URL/install.sh" -o /run/vmkit-install.sh',
    'bash /run/vmkit-install.sh "$VMKIT_CONTROL_PLANE_URL" "$VMKIT_ENROLLMENT_TOKEN"',
  ].join(' && ');
  const config = {
    hostname,
    preserve_hostname: false,
    package_update: true,
    packages: ['ca-certificates', 'curl', 'docker.io'],
    write_files: [{ path: ENROLL_ENV_FILE, permissions: '0600', owner: 'root:root', content: `${env.join('\n')}\n` }],
    runcmd: [
      ['systemctl', 'enable', '--now', 'docker'],
      ['sh', '-c', `${install}; rc=$?; rm -f ${ENROLL_ENV_FILE} /run/vmkit-install.sh; exit $rc`],
    ],
  };
  return `#cloud-config\n${JSON.stringify(config, null, 2)}\n`;
}
