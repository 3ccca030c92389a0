/** What the scaffolding generator needs from a scan: the columns of a scan row and a few of its details. */
export interface ScanFacts {
  /** node, python, ruby, go, php, java, kotlin, elixir, rust, dotnet, static, or unknown. */
  language: string | null;
  /** The scan's framework id (express, fastapi, rails, gin, ...), or null. */
  framework: string | null;
  /** The Cloud Native Buildpacks builder the scan recommends. */
  buildpack?: string | null;
  dockerfile_detected: boolean | null;
  procfile_detected: boolean | null;
  /** The app's directory inside the repository ('.' for the root), from the scan's details. */
  root?: string | null;
}

export interface ScaffoldInput {
  repo: { owner: string; name: string };
  defaultBranch: string;
  scan: ScanFacts;
  /** The repository's environment names (e.g. staging, production): one Kamal destination each. */
  environments: string[];
  /** The DNS zone app hosts live under (`<service>-<dest>.<zone>`), named in the pull request body. */
  zone?: string;
  /**
   * Servers per environment. VMKit gives each environment one VM, so this is 1 unless a
   * caller says otherwise; it decides whether kamal-proxy may use Let's Encrypt (one server only).
   */
  serversPerEnvironment?: number;
}

export interface ScaffoldFile {
  path: string;
  content: string;
}

/** A repository secret the deploy workflow reads, and who puts it there. */
export interface ScaffoldSecret {
  name: string;
  purpose: string;
  /** 'vmkit' when the control plane sets it itself (the GitHub App may write secrets). */
  setBy: 'vmkit' | 'you';
}

export interface Scaffolding {
  files: ScaffoldFile[];
  pr: { title: string; body: string; branch: 'vmkit/scaffolding' };
  secrets: ScaffoldSecret[];
  appPort: number;
  healthcheckPath: string;
}
