import type { ComputeProvider } from '../../providers/compute/types.ts';
import type { DnsProvider } from '../../providers/dns/types.ts';
import type { GitHubClient } from '../../providers/github/client.ts';

/**
 * The providers one workspace deploys with, resolved from its settings
 * (`PUT /api/workspace/{compute,dns,github}`) or, for the first workspace, from the
 * control plane's defaults (local sandbox, local DNS, GitHub from the environment).
 */
export interface WorkspaceProviderSet {
  /** Null when the workspace has no compute configured: deploy answers `compute_target_missing`. */
  compute: ComputeProvider | null;
  dns: DnsProvider;
  /** Null when repos come only from local checkouts: deploy answers `github_app_not_installed`. */
  github: GitHubClient | null;
}

/** Resolves a workspace's providers; the deploy service's port, implemented by the workspace settings. */
export type ProvidersOf = (workspaceId: string) => Promise<WorkspaceProviderSet>;

declare module '../../app.ts' {
  interface AppContext {
    /** How deploy finds a workspace's providers; tests may replace it. */
    deployProviders?: ProvidersOf;
  }
}
