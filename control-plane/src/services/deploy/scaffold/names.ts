import { repoFullNameProblem } from '@vmkit/protocol';
import { ApiError } from '../../../errors.ts';

/**
 * Names that end up in file names, YAML and the workflow. The generator emits YAML with a
 * YAML library, but a name also becomes a path (`config/deploy.<dest>.yml`) and a Kamal
 * destination on a shell command line, so it is checked here as well as at the API.
 */

/** The environment rule of the API (`POST /api/repos/{id}/environments`): a DNS label, at most 32 long. */
export const ENVIRONMENT_NAME = /^[a-z0-9](?:[a-z0-9-]{0,30}[a-z0-9])?$/;

export function checkRepo(repo: { owner: string; name: string }): void {
  const problem = repoFullNameProblem(`${repo.owner}/${repo.name}`);
  if (problem !== null) throw new ApiError('invalid_request', `Cannot scaffold ${JSON.stringify(`${repo.owner}/${repo.name}`)}: ${problem}.`);
}

export function checkEnvironments(names: readonly string[]): void {
  if (names.length === 0) throw new ApiError('invalid_request', 'Cannot scaffold a deploy without an environment: create one (e.g. staging) first.');
  const seen = new Set<string>();
  for (const name of names) {
    if (!ENVIRONMENT_NAME.test(name)) {
      throw new ApiError('invalid_request', `Cannot scaffold environment ${JSON.stringify(name)}: names are 1-32 lowercase letters, digits or inner dashes.`);
    }
    if (seen.has(name)) throw new ApiError('invalid_request', `Environment ${name} is listed twice.`);
    seen.add(name);
  }
}

/** A DNS zone as Cloudflare and Let's Encrypt take it: dot-separated labels. */
const ZONE = /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$/;

/** The zone lowercased without a trailing dot, or undefined; anything else is refused. */
export function checkZone(zone: string | undefined): string | undefined {
  if (zone === undefined) return undefined;
  const z = zone.toLowerCase().replace(/\.$/, '');
  if (!ZONE.test(z)) throw new ApiError('invalid_request', `Cannot scaffold with DNS zone ${JSON.stringify(zone)}: it is not a domain name.`);
  return z;
}

/**
 * The app's directory from the scan, as a path Kamal can build from: '.' for the root,
 * else plain relative segments. A directory name that is not one (`..`, spaces,
 * backticks) is not used: the config then builds from the root and the PR says so.
 */
export function appRoot(root: string | null | undefined): { root: string; ignored: string | null } {
  if (root === null || root === undefined || root === '' || root === '.') return { root: '.', ignored: null };
  const segments = root.split('/');
  const ok = root.length <= 200 && segments.every((seg) => /^[A-Za-z0-9._-]+$/.test(seg) && seg !== '.' && seg !== '..');
  return ok ? { root, ignored: null } : { root: '.', ignored: root };
}

/**
 * Kamal's service name: it allows only letters, digits, `-` and `_`
 * (Kamal::Configuration#ensure_valid_service_name). Repository names may also hold `.`.
 */
export function serviceName(repoName: string): string {
  const s = repoName.toLowerCase().replace(/[^a-z0-9_-]+/g, '-').replace(/^[-_]+|[-_]+$/g, '');
  return s === '' ? 'app' : s;
}

/**
 * One path component of an OCI image name: lowercase alphanumerics joined by single
 * `.`, `_`, `__` or dashes (the distribution spec's grammar); GitHub's container
 * registry also wants lowercase owners.
 */
export function imageComponent(name: string): string {
  const s = name
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/[._-]{2,}/g, '-')
    .replace(/^[._-]+|[._-]+$/g, '');
  return s === '' ? 'app' : s;
}

/** `owner/name` as pushed to ghcr.io: Kamal prefixes the registry server itself (`server/image`). */
export function imageName(repo: { owner: string; name: string }): string {
  return `${imageComponent(repo.owner)}/${imageComponent(repo.name)}`;
}
