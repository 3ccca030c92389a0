/**
 * The scaffolding the first deploy call opens as a pull request: a Kamal 2 config per
 * environment, the secrets file, the deploy workflow and the pull request text, all
 * computed from the scan. Pure: no I/O, the same input gives the same files.
 */
import { frameworkDefaults } from './frameworks.ts';
import { deployYml, destinationYml } from './kamal-config.ts';
import { appRoot, checkEnvironments, checkRepo, checkZone, imageName, serviceName } from './names.ts';
import { prBody, prTitle } from './pr-body.ts';
import { KAMAL_SECRETS_PATH, kamalSecretsFile, repositorySecrets } from './secrets.ts';
import type { ScaffoldInput, Scaffolding } from './types.ts';
import { WORKFLOW_PATH, workflowYml } from './workflow.ts';
import { ApiError } from '../../../errors.ts';

export type { ScaffoldFile, ScaffoldInput, ScaffoldSecret, Scaffolding, ScanFacts } from './types.ts';
export { KAMAL_SECRETS_PATH, SSH_KEY_SECRET } from './secrets.ts';
export { KAMAL_VERSION, RUN_NAME, WORKFLOW_FILE, WORKFLOW_PATH, workflowInputs } from './workflow.ts';
export type { WorkflowInputs } from './workflow.ts';
export { APP_HOST_ENV, HOST_ENV, REGISTRY_SERVER } from './kamal-config.ts';

export const SCAFFOLD_BRANCH = 'vmkit/scaffolding';

export function generateScaffolding(input: ScaffoldInput): Scaffolding {
  checkRepo(input.repo);
  checkEnvironments(input.environments);
  const zone = checkZone(input.zone);
  const serverCount = input.serversPerEnvironment ?? 1;
  if (!Number.isInteger(serverCount) || serverCount < 1 || serverCount > 20) {
    throw new ApiError('invalid_request', 'serversPerEnvironment must be a whole number from 1 to 20.');
  }
  const repoFullName = `${input.repo.owner}/${input.repo.name}`;
  const service = serviceName(input.repo.name);
  const image = imageName(input.repo);
  const defaults = frameworkDefaults(input.scan);
  const root = appRoot(input.scan.root);
  const secrets = repositorySecrets(defaults);

  const files = [
    { path: 'config/deploy.yml', content: deployYml({ repoFullName, service, image, defaults, root: root.root }) },
    ...input.environments.map((dest) => ({ path: `config/deploy.${dest}.yml`, content: destinationYml(dest, serverCount) })),
    { path: KAMAL_SECRETS_PATH, content: kamalSecretsFile(defaults) },
    { path: WORKFLOW_PATH, content: workflowYml(defaults) },
  ];
  const body = prBody({
    repoFullName,
    repoName: input.repo.name,
    defaultBranch: input.defaultBranch,
    image,
    environments: input.environments,
    zone,
    root,
    scan: input.scan,
    defaults,
    secrets,
    serverCount,
  });
  return {
    files,
    pr: { title: prTitle(), body, branch: SCAFFOLD_BRANCH },
    secrets,
    appPort: defaults.appPort,
    healthcheckPath: defaults.healthcheckPath,
  };
}
