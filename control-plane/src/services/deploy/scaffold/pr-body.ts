import { hostFor } from '../../../providers/dns/types.ts';
import type { FrameworkDefaults } from './frameworks.ts';
import { REGISTRY_SERVER } from './kamal-config.ts';
import { KAMAL_SECRETS_PATH } from './secrets.ts';
import type { ScaffoldSecret, ScanFacts } from './types.ts';
import { WORKFLOW_PATH } from './workflow.ts';

export interface PrBodyInput {
  repoFullName: string;
  /** The repository name, which the DNS names of the environments start with. */
  repoName: string;
  defaultBranch: string;
  image: string;
  environments: readonly string[];
  zone: string | undefined;
  scan: ScanFacts;
  defaults: FrameworkDefaults;
  secrets: readonly ScaffoldSecret[];
  serverCount: number;
  /** The app's directory, and a scan directory that could not be used as one. */
  root: { root: string; ignored: string | null };
}

/** What to add when the repository has no Dockerfile: Kamal builds with Docker. */
const DOCKERFILE_HINTS: Record<string, string> = {
  node: '`FROM node:22-slim`, `npm ci`, `npm run build` when there is a build, and `CMD ["npm", "start"]`',
  python: '`FROM python:3.12-slim`, `pip install -r requirements.txt`, and a server command such as `gunicorn --bind 0.0.0.0:8000 <module>:app` (uvicorn for FastAPI)',
  ruby: '`rails new` writes one since Rails 7.1 (`bin/rails app:update` on an older app); otherwise `FROM ruby:3.3-slim`, `bundle install`, `CMD ["bundle", "exec", "rackup", "-o", "0.0.0.0"]`',
  go: 'a two-stage build: `FROM golang:1.23` running `go build -o /app .`, then a small runtime image (`gcr.io/distroless/static`) with `CMD ["/app"]`',
  php: '`FROM php:8.3-apache` (or serversideup/php) copying the app and running `composer install --no-dev`',
  java: 'a two-stage build: a JDK image running `./mvnw package` or `./gradlew build`, then `FROM eclipse-temurin:21-jre` with `CMD ["java", "-jar", "/app.jar"]`',
  kotlin: 'a two-stage build: a JDK image running `./gradlew build`, then `FROM eclipse-temurin:21-jre` with `CMD ["java", "-jar", "/app.jar"]`',
  elixir: '`mix phx.gen.release --docker` writes one for Phoenix',
  rust: 'a two-stage build: `FROM rust:1` running `cargo build --release`, then `FROM debian:bookworm-slim` with the binary as `CMD`',
  dotnet: 'a two-stage build: `FROM mcr.microsoft.com/dotnet/sdk:8.0` running `dotnet publish -c Release -o /out`, then `FROM mcr.microsoft.com/dotnet/aspnet:8.0`',
  static: '`FROM nginx:alpine` copying the site (or its build output) to `/usr/share/nginx/html`',
};

export function prTitle(): string {
  return 'Deploy with VMKit: Kamal config and deploy workflow';
}

export function prBody(p: PrBodyInput): string {
  const { defaults } = p;
  const out: string[] = [];
  out.push(
    `VMKit scanned \`${p.repoFullName}\` and found **${defaults.label}**. This pull request adds what VMKit needs to deploy it with [Kamal 2](https://kamal-deploy.org): merge it into \`${p.defaultBranch}\`, then ask VMKit to deploy again.`,
    '',
    '### Files',
    '',
    '| File | What it is |',
    '|---|---|',
    '| `config/deploy.yml` | Kamal configuration every environment shares: service, image, SSH user, proxy (port, health check), registry, builder, environment variables. |',
  );
  for (const dest of p.environments) {
    out.push(`| \`config/deploy.${dest}.yml\` | The \`${dest}\` destination: its server and host name, filled in by the workflow when VMKit deploys (nothing is committed). |`);
  }
  out.push(
    `| \`${KAMAL_SECRETS_PATH}\` | The secrets Kamal reads, as \`NAME=$NAME\` references only; the workflow supplies the values. (Kamal reads \`.kamal/secrets-common\` for every destination; a plain \`.kamal/secrets\` is skipped when deploying with \`-d\`.) |`,
    `| \`${WORKFLOW_PATH}\` | The deploy workflow VMKit dispatches: checks out the commit, installs Kamal 2, loads the deploy key, trusts only the VM's SSH host keys VMKit recorded when the VM enrolled, and runs \`kamal deploy -d <environment>\`. One deploy per environment at a time. |`,
    '',
    '### Secrets',
    '',
    '| Repository secret | Why | Who sets it |',
    '|---|---|---|',
  );
  for (const s of p.secrets) {
    const who =
      s.setBy === 'vmkit'
        ? 'VMKit sets it when its GitHub App has the **Secrets** (read and write) permission; otherwise VMKit says so when you deploy and tells you how to add it.'
        : 'You: Settings → Secrets and variables → Actions → New repository secret.';
    out.push(`| \`${s.name}\` | ${escapeCell(s.purpose)} | ${who} |`);
  }
  out.push(
    '',
    `No registry secret is needed: the image goes to GitHub's container registry (\`${REGISTRY_SERVER}/${p.image}\`), and the workflow logs in with its own \`GITHUB_TOKEN\` (it asks for \`packages: write\` and nothing more than \`contents: read\` besides).`,
    `To give the app another secret, add a repository secret, list its name under \`env.secret\` in \`config/deploy.yml\`, add \`NAME=$NAME\` to \`${KAMAL_SECRETS_PATH}\`, and pass it in the workflow's "Deploy with Kamal" step (\`NAME: \${{ secrets.NAME }}\`).`,
    '',
    '### Guesses to check',
    '',
    `- **Port ${defaults.appPort}** (\`proxy.app_port\`): ${defaults.portReason}. The container also gets \`PORT=${defaults.appPort}\` where the app reads it. If your app listens elsewhere, change \`app_port\`.`,
  );
  if (defaults.healthcheckHint === null) {
    out.push(`- **Health check \`${defaults.healthcheckPath}\`** (\`proxy.healthcheck.path\`): kamal-proxy waits for it to answer 200 before switching traffic to a new version; ${defaults.label} answers it out of the box${defaults.healthcheckSince !== null ? ` (${defaults.healthcheckSince})` : ''}.`);
  } else {
    out.push(
      `- **Health check \`${defaults.healthcheckPath}\`** (\`proxy.healthcheck.path\`): kamal-proxy waits for it to answer 200 before switching traffic to a new version. ${defaults.label} has no such route by default: add one, for example ${defaults.healthcheckHint}, or point \`healthcheck.path\` at a route your app already answers with 200.`,
    );
  }
  const inRoot = p.root.root === '.';
  if (inRoot && p.scan.dockerfile_detected !== true) {
    const hint = DOCKERFILE_HINTS[p.scan.language ?? ''] ?? 'a Dockerfile that builds the app and starts its web server';
    out.push(`- **No Dockerfile found.** Kamal builds the image with Docker from a \`Dockerfile\` at the repository root; add one before deploying: ${hint}. It must listen on port ${defaults.appPort} (or change \`app_port\`).`);
  }
  if (!inRoot) {
    out.push(
      `- **The app lives in \`${p.root.root}/\`.** Kamal builds that directory with \`${p.root.root}/Dockerfile\` (\`builder.context\` and \`builder.dockerfile\`); add that Dockerfile if it is missing, listening on port ${defaults.appPort}.`,
    );
  }
  if (p.root.ignored !== null) {
    out.push(`- **The scan placed the app in a directory Kamal cannot be pointed at safely** (${JSON.stringify(p.root.ignored)}), so the config builds from the repository root: set \`builder.context\` and \`builder.dockerfile\` yourself.`);
  }
  if (p.serverCount === 1) {
    out.push(`- **HTTPS**: \`proxy.ssl: true\` lets kamal-proxy get a Let's Encrypt certificate for each environment's host name; that needs one server per environment, which is what VMKit provisions.`);
  } else {
    out.push(`- **No HTTPS from kamal-proxy**: with ${p.serverCount} servers per environment Let's Encrypt through kamal-proxy is not possible; terminate TLS in front of the servers.`);
  }
  if (p.zone !== undefined) {
    out.push('', '### Where it will answer', '');
    for (const dest of p.environments) out.push(`- \`${dest}\`: https://${hostFor(p.repoName, dest, p.zone)} (VMKit registers the DNS record)`);
  }
  out.push('', 'Everything here is plain Kamal: you can run `kamal deploy -d <environment>` yourself with the same variables set, and edit any file after merging.', '');
  return out.join('\n');
}

function escapeCell(s: string): string {
  return s.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}
