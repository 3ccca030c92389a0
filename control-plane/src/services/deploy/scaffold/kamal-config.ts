import type { FrameworkDefaults } from './frameworks.ts';
import { commentAbove, erb, render, yamlDocument } from './yaml-doc.ts';

/** Set by the deploy workflow from its dispatch inputs; Kamal reads them through ERB. */
export const HOST_ENV = 'VMKIT_HOST';
export const APP_HOST_ENV = 'VMKIT_APP_HOST';
/** The registry login, set by the workflow from `github.actor` and its GITHUB_TOKEN. */
export const REGISTRY_USERNAME = 'KAMAL_REGISTRY_USERNAME';
export const REGISTRY_PASSWORD = 'KAMAL_REGISTRY_PASSWORD';
/** GitHub's container registry: the workflow's own token may push to it, so no registry secret is needed. */
export const REGISTRY_SERVER = 'ghcr.io';

export interface KamalConfigInput {
  repoFullName: string;
  service: string;
  image: string;
  defaults: FrameworkDefaults;
  /** The app's directory ('.' for the repository root). */
  root: string;
}

/** `config/deploy.yml`: what every destination shares. Servers and the app host are per destination. */
export function deployYml(input: KamalConfigInput): string {
  const { defaults } = input;
  const env: Record<string, unknown> = { clear: { ...defaults.clearEnv } };
  if (defaults.appSecrets.length > 0) env.secret = defaults.appSecrets.map((s) => s.name);
  const doc = yamlDocument(
    {
      service: input.service,
      image: input.image,
      ssh: { user: 'kamal' },
      proxy: { app_port: defaults.appPort, healthcheck: { path: defaults.healthcheckPath } },
      registry: { server: REGISTRY_SERVER, username: [REGISTRY_USERNAME], password: [REGISTRY_PASSWORD] },
      builder: input.root === '.' ? { arch: 'amd64' } : { arch: 'amd64', context: input.root, dockerfile: `${input.root}/Dockerfile` },
      env,
    },
    [
      `Kamal 2 configuration for ${input.repoFullName}, written by VMKit from a scan (${defaults.label}).`,
      'Each environment is a destination: config/deploy.<environment>.yml adds its server and',
      'host name, filled in by .github/workflows/vmkit-deploy.yml when VMKit deploys.',
      'Reference: https://kamal-deploy.org/docs/configuration/overview/',
    ].join('\n'),
  );
  commentAbove(doc, ['service'], 'Container name prefix; letters, digits, - and _ only.');
  commentAbove(doc, ['image'], `Pushed to ${REGISTRY_SERVER}/${input.image} (Kamal prefixes the registry server).`);
  commentAbove(doc, ['ssh'], 'VMKit hardens the VM with a non-root kamal user in the docker group.');
  commentAbove(doc, ['proxy', 'app_port'], `A guess: ${defaults.portReason}. Change it if your app listens elsewhere.`);
  commentAbove(
    doc,
    ['proxy', 'healthcheck'],
    defaults.healthcheckHint === null
      ? `kamal-proxy waits for ${defaults.healthcheckPath} to answer 200 before it sends traffic to a new version.`
      : `kamal-proxy waits for ${defaults.healthcheckPath} to answer 200 before it sends traffic to a new version;\nadd that route (${defaults.healthcheckHint}) or point this at one your app has.`,
  );
  commentAbove(doc, ['registry'], `The workflow logs in with its own GITHUB_TOKEN (permission packages: write).`);
  commentAbove(
    doc,
    ['builder'],
    input.root === '.'
      ? 'VMKit VMs are x86-64. Kamal builds a clean clone of the commit with the Dockerfile at the root.'
      : `VMKit VMs are x86-64. The app lives in ${input.root}/: Kamal builds that directory with its Dockerfile\n(a context also makes Kamal build the checkout as it is rather than a fresh clone).`,
  );
  commentAbove(
    doc,
    ['env'],
    'clear: plain values. secret: names read from .kamal/secrets-common, which the workflow\nfills from repository secrets of the same name.',
  );
  return render(doc);
}

/**
 * `config/deploy.<dest>.yml`: the destination's servers and host, read from the
 * environment at deploy time (never committed). Let's Encrypt (`ssl: true`) needs the
 * host to point at exactly one server, so it is on only for a single server.
 */
export function destinationYml(dest: string, serverCount: number): string {
  const hosts = serverCount === 1 ? [erb(`ENV.fetch("${HOST_ENV}")`)] : Array.from({ length: serverCount }, (_, i) => erb(`ENV.fetch("${HOST_ENV}").split(",").fetch(${i})`));
  const proxy: Record<string, unknown> = { host: erb(`ENV.fetch("${APP_HOST_ENV}")`) };
  if (serverCount === 1) proxy.ssl = true;
  const doc = yamlDocument(
    { servers: hosts, proxy },
    [
      `Destination ${dest}: \`kamal deploy -d ${dest}\` merges this file over config/deploy.yml.`,
      `${HOST_ENV} (the VM's address) and ${APP_HOST_ENV} (the app's host name) are set by the`,
      'deploy workflow from what VMKit dispatches; Kamal reads them through ERB.',
    ].join('\n'),
  );
  commentAbove(
    doc,
    ['proxy', 'host'],
    serverCount === 1
      ? "The DNS name VMKit registers for this environment; with ssl, kamal-proxy gets its\ncertificate from Let's Encrypt."
      : "The DNS name VMKit registers for this environment. No ssl: Let's Encrypt through\nkamal-proxy works only with a single server.",
  );
  return render(doc);
}
