import { SSH_HOST_KEY_TYPES } from '@vmkit/protocol';
import type { FrameworkDefaults } from './frameworks.ts';
import { APP_HOST_ENV, HOST_ENV, REGISTRY_PASSWORD, REGISTRY_USERNAME } from './kamal-config.ts';
import { SSH_KEY_SECRET } from './secrets.ts';
import { render, yamlDocument } from './yaml-doc.ts';

export const WORKFLOW_FILE = 'vmkit-deploy.yml';
export const WORKFLOW_PATH = `.github/workflows/${WORKFLOW_FILE}`;
/** Kamal 2, at least the release whose documented keys the generated config is checked against. */
export const KAMAL_VERSION = '~> 2.12';

/** What the control plane dispatches the workflow with (all strings, as workflow_dispatch takes them). */
export interface WorkflowInputs {
  /** The VMKit deploy id; the run name carries it so the run can be found by name. */
  deploy_id: string;
  /** The environment: the Kamal destination. */
  dest: string;
  /** The VM's address Kamal connects to over SSH. */
  host: string;
  /** The commit to deploy (40 hex digits). */
  sha: string;
  /** The host name the app answers on (kamal-proxy's host). */
  app_host: string;
  /** The VM's SSH host public keys (`type base64`), comma-separated: the only keys trusted for `host`. */
  host_keys: string;
}

/**
 * The dispatch inputs for one deploy; host keys are the OpenSSH lines the agent
 * reported at enrollment, reduced to `type key` (comments dropped).
 */
export function workflowInputs(p: { deployId: string; dest: string; host: string; sha: string; appHost: string; hostKeys: readonly string[] }): WorkflowInputs & Record<string, string> {
  const keys = p.hostKeys.map((line) => line.trim().split(/\s+/).slice(0, 2).join(' ')).filter((k) => k !== '');
  return { deploy_id: p.deployId, dest: p.dest, host: p.host, sha: p.sha, app_host: p.appHost, host_keys: keys.join(',') };
}

/** The run name GitHub shows; `findRunByName` looks for the deploy id in it. */
export const RUN_NAME = 'VMKit deploy ${{ inputs.deploy_id }} of ${{ inputs.sha }} to ${{ inputs.dest }}';

// Each script reads dispatch inputs from environment variables, never from `${{ }}`
// pasted into the script, so an input cannot become shell code.
const CHECK_INPUTS = `set -euo pipefail
fail() { echo "::error::$1"; exit 1; }
[[ "$DEPLOY_ID" =~ ^[A-Za-z0-9_-]{1,64}$ ]] || fail "deploy_id is not a VMKit deploy id"
[[ "$DEST" =~ ^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$ ]] || fail "dest must be an environment name (lowercase letters, digits, inner dashes)"
[[ "$DEPLOY_SHA" =~ ^[0-9a-f]{40}$ ]] || fail "sha must be a full 40-character commit sha"
[[ "$${HOST_ENV}" =~ ^[A-Za-z0-9.:,-]{1,1000}$ ]] || fail "host must be IP addresses or host names, comma-separated"
[[ "$${APP_HOST_ENV}" =~ ^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$ ]] || fail "app_host must be a DNS name"
`;

const CHECK_DESTINATION = `set -euo pipefail
test -f "config/deploy.$DEST.yml" || { echo "::error::config/deploy.$DEST.yml is missing: add the destination file for $DEST (copy another config/deploy.<environment>.yml)"; exit 1; }
`;

/** The host key types the agent may report, as a bash regex alternation. */
const KEY_TYPES = SSH_HOST_KEY_TYPES.join('|');

// known_hosts holds exactly the keys the VM's agent reported; StrictHostKeyChecking yes
// makes net-ssh (Kamal's SSH) refuse any other key instead of trusting it on first use.
const PIN_HOST_KEYS = `set -euo pipefail
install -d -m 700 ~/.ssh
: > ~/.ssh/known_hosts
IFS=',' read -ra hosts <<< "$${HOST_ENV}"
count=0
while IFS= read -r line; do
  [ -z "$line" ] && continue
  read -r type key rest <<< "$line"
  [[ "$type" =~ ^(${KEY_TYPES})$ && "$key" =~ ^[A-Za-z0-9+/]+=*$ && -z "$rest" ]] || { echo "::error::host_keys holds something that is not an SSH public key"; exit 1; }
  for h in "\${hosts[@]}"; do printf '%s %s %s\\n' "$h" "$type" "$key" >> ~/.ssh/known_hosts; done
  count=$((count + 1))
done < <(tr ',' '\\n' <<< "$HOST_KEYS")
[ "$count" -gt 0 ] || { echo "::error::host_keys is empty: VMKit has no SSH host key for this VM, so it cannot be trusted"; exit 1; }
chmod 600 ~/.ssh/known_hosts
printf 'Host *\\n  StrictHostKeyChecking yes\\n  UserKnownHostsFile ~/.ssh/known_hosts\\n' > ~/.ssh/config
chmod 600 ~/.ssh/config
`;

const LOAD_KEY = `set -euo pipefail
[ -n "$${SSH_KEY_SECRET}" ] || { echo "::error::The repository secret ${SSH_KEY_SECRET} is missing; see the VMKit scaffolding pull request for how to add it"; exit 1; }
sock="$RUNNER_TEMP/vmkit-ssh-agent.sock"
ssh-agent -a "$sock" > /dev/null
printf '%s\\n' "$${SSH_KEY_SECRET}" | SSH_AUTH_SOCK="$sock" ssh-add -
echo "SSH_AUTH_SOCK=$sock" >> "$GITHUB_ENV"
`;

/** `.github/workflows/vmkit-deploy.yml`. */
export function workflowYml(defaults: FrameworkDefaults): string {
  const input = (description: string) => ({ description, required: true, type: 'string' });
  const deployEnv: Record<string, string> = {
    [REGISTRY_USERNAME]: '${{ github.actor }}',
    [REGISTRY_PASSWORD]: '${{ secrets.GITHUB_TOKEN }}',
  };
  for (const s of defaults.appSecrets) deployEnv[s.name] = `\${{ secrets.${s.name} }}`;
  const doc = yamlDocument(
    {
      name: 'VMKit deploy',
      'run-name': RUN_NAME,
      on: {
        workflow_dispatch: {
          inputs: {
            deploy_id: input('VMKit deploy id (carried in the run name so VMKit can find this run)'),
            dest: input('Environment: the Kamal destination (config/deploy.<dest>.yml)'),
            host: input("The VM's address"),
            sha: input('Commit to deploy'),
            app_host: input('Host name the app answers on'),
            host_keys: input("The VM's SSH host public keys, captured by VMKit at enrollment (comma-separated)"),
          },
        },
      },
      permissions: { contents: 'read', packages: 'write' },
      concurrency: { group: 'vmkit-deploy-${{ inputs.dest }}', 'cancel-in-progress': false },
      jobs: {
        deploy: {
          name: 'Deploy to ${{ inputs.dest }}',
          'runs-on': 'ubuntu-latest',
          'timeout-minutes': 30,
          env: {
            DEPLOY_ID: '${{ inputs.deploy_id }}',
            DEST: '${{ inputs.dest }}',
            DEPLOY_SHA: '${{ inputs.sha }}',
            [HOST_ENV]: '${{ inputs.host }}',
            [APP_HOST_ENV]: '${{ inputs.app_host }}',
            HOST_KEYS: '${{ inputs.host_keys }}',
          },
          steps: [
            { name: 'Check the inputs', run: CHECK_INPUTS },
            { name: 'Check out the commit', uses: 'actions/checkout@v5', with: { ref: '${{ inputs.sha }}', 'persist-credentials': false } },
            { name: 'Check the destination', run: CHECK_DESTINATION },
            { name: 'Set up Ruby', uses: 'ruby/setup-ruby@v1', with: { 'ruby-version': '3.4' } },
            { name: 'Install Kamal', run: `gem install kamal --no-document -v '${KAMAL_VERSION}'\nkamal version\n` },
            { name: "Trust only the VM's SSH host keys", run: PIN_HOST_KEYS },
            { name: 'Load the deploy key', env: { [SSH_KEY_SECRET]: `\${{ secrets.${SSH_KEY_SECRET} }}` }, run: LOAD_KEY },
            { name: 'Deploy with Kamal', env: deployEnv, run: 'kamal deploy -d "$DEST"\n' },
          ],
        },
      },
    },
    [
      'Deploys this repository with Kamal to a VMKit environment. VMKit dispatches it with the',
      "environment, the VM's address and SSH host keys, the commit and the deploy id; it is not",
      'meant to be started by hand. Written by VMKit; see config/deploy.yml.',
    ].join('\n'),
  );
  return render(doc);
}
