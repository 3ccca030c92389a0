import type { FrameworkDefaults } from './frameworks.ts';
import { REGISTRY_PASSWORD, REGISTRY_USERNAME } from './kamal-config.ts';
import type { ScaffoldSecret } from './types.ts';

/** The repository secret holding the deploy SSH private key the workflow loads into ssh-agent. */
export const SSH_KEY_SECRET = 'VMKIT_SSH_PRIVATE_KEY';

/**
 * Kamal reads `.kamal/secrets-common` and then `.kamal/secrets.<dest>`; the plain
 * `.kamal/secrets` is skipped whenever a destination is given (`-d`), which VMKit
 * always gives. So the shared references live in `-common`.
 */
export const KAMAL_SECRETS_PATH = '.kamal/secrets-common';

/** Repository secrets the workflow reads, and who sets them. */
export function repositorySecrets(defaults: FrameworkDefaults): ScaffoldSecret[] {
  return [
    {
      name: SSH_KEY_SECRET,
      purpose: "the private half of the deploy key VMKit installs for the VM's kamal user; the workflow loads it into ssh-agent so Kamal can log in",
      setBy: 'vmkit',
    },
    ...defaults.appSecrets.map((s): ScaffoldSecret => ({ name: s.name, purpose: s.purpose, setBy: 'you' })),
  ];
}

/** Only `NAME=$NAME` references: values come from the workflow's environment, never from the file. */
export function kamalSecretsFile(defaults: FrameworkDefaults): string {
  const names = [REGISTRY_USERNAME, REGISTRY_PASSWORD, ...defaults.appSecrets.map((s) => s.name)];
  return [
    '# Secrets Kamal reads for every destination (kamal deploy -d <environment>).',
    '# Only references to environment variables that .github/workflows/vmkit-deploy.yml sets',
    '# from its GITHUB_TOKEN and repository secrets. Never write a value into this file.',
    ...names.map((n) => `${n}=$${n}`),
    '',
  ].join('\n');
}
