import type { ErrorKey } from '@vmkit/protocol';

/** `owner/name` split and validated; the only form a source ever receives. */
export interface RepoRef {
  owner: string;
  name: string;
}

export interface RepoHead {
  /** The branch a deploy builds by default; null when the source cannot tell (detached checkout). */
  defaultBranch: string | null;
  /** The commit every later read of this scan is pinned to. */
  sha: string;
}

export interface TreeEntry {
  /** Path from the repository root, `/`-separated, no leading slash. */
  path: string;
  type: 'file' | 'dir';
  /** Bytes, when the source knows it without reading the file. */
  size?: number | undefined;
}

export interface RepoTree {
  entries: TreeEntry[];
  /**
   * The source gave up listing everything (GitHub caps recursive trees); callers
   * fall back to `listDir` for the directories they need.
   */
  truncated: boolean;
}

/**
 * Where repository contents come from. Everything after `head` is pinned to the sha
 * it returned, so one scan sees one commit even if the branch moves meanwhile.
 */
export interface RepoSource {
  readonly kind: 'github' | 'local';
  head(repo: RepoRef): Promise<RepoHead>;
  listTree(repo: RepoRef, sha: string): Promise<RepoTree>;
  /** Direct children of `dir` ('' is the root). */
  listDir(repo: RepoRef, sha: string, dir: string): Promise<TreeEntry[]>;
  /** UTF-8 text of a file, or null when it does not exist or is larger than `maxBytes`. */
  readFile(repo: RepoRef, sha: string, path: string, maxBytes?: number): Promise<string | null>;
}

/** Files larger than this are never read for classification. */
export const DEFAULT_MAX_FILE_BYTES = 512 * 1024;

/**
 * A failure of a source, carrying the error key the REST API answers with. Local to
 * the providers: the scan service turns it into an ApiError.
 */
export class RepoSourceError extends Error {
  override name = 'RepoSourceError';
  readonly key: ErrorKey;
  readonly detail: Record<string, unknown>;
  constructor(
    key: ErrorKey,
    message: string,
    detail: Record<string, unknown> = {},
  ) {
    super(message);
    this.key = key;
    this.detail = detail;
  }
}
