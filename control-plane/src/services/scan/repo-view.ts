import type { RepoRef, RepoSource, TreeEntry } from '../../providers/repo-source/types.ts';

/** The most files one scan reads; classification needs manifests, not the repository. */
export const MAX_FILES_READ = 60;
/** Manifests and sources larger than this are not read. */
export const MAX_READ_BYTES = 256 * 1024;

/**
 * One commit of one repository as the classifier sees it: directory listings from the
 * recursive tree (or, when the source truncated it, per-directory listings on demand)
 * and file reads that are cached and counted.
 */
export class RepoView {
  readonly filesRead: string[] = [];
  readonly #source: RepoSource;
  readonly #repo: RepoRef;
  readonly #sha: string;
  readonly #index: Map<string, TreeEntry[]> | null;
  readonly #dirs = new Map<string, Promise<TreeEntry[]>>();
  readonly #files = new Map<string, Promise<string | null>>();

  private constructor(source: RepoSource, repo: RepoRef, sha: string, index: Map<string, TreeEntry[]> | null) {
    this.#source = source;
    this.#repo = repo;
    this.#sha = sha;
    this.#index = index;
  }

  /** Lists the tree once; a truncated tree is not trusted and directories are listed one by one. */
  static async open(source: RepoSource, repo: RepoRef, sha: string): Promise<RepoView> {
    const tree = await source.listTree(repo, sha);
    return new RepoView(source, repo, sha, tree.truncated ? null : indexTree(tree.entries));
  }

  get treeComplete(): boolean {
    return this.#index !== null;
  }

  /** Direct children of `dir` ('' is the root), sorted by path. */
  list(dir: string): Promise<TreeEntry[]> {
    if (this.#index) return Promise.resolve(this.#index.get(dir) ?? []);
    let p = this.#dirs.get(dir);
    if (!p) {
      p = this.#listFromSource(dir);
      this.#dirs.set(dir, p);
    }
    return p;
  }

  /** Asks the source only for directories its parent listing shows, so absent paths cost no call. */
  async #listFromSource(dir: string): Promise<TreeEntry[]> {
    if (dir !== '') {
      const slash = dir.lastIndexOf('/');
      const siblings = await this.list(slash < 0 ? '' : dir.slice(0, slash));
      if (!siblings.some((e) => e.path === dir && e.type === 'dir')) return [];
    }
    return [...(await this.#source.listDir(this.#repo, this.#sha, dir))].sort(byPath);
  }

  async entry(path: string): Promise<TreeEntry | null> {
    const slash = path.lastIndexOf('/');
    const parent = slash < 0 ? '' : path.slice(0, slash);
    return (await this.list(parent)).find((e) => e.path === path) ?? null;
  }

  /** A file's text, or null if absent, too large, or past the per-scan read budget. */
  read(path: string): Promise<string | null> {
    let p = this.#files.get(path);
    if (!p) {
      p = this.#read(path);
      this.#files.set(path, p);
    }
    return p;
  }

  async #read(path: string): Promise<string | null> {
    const e = await this.entry(path);
    if (!e || e.type !== 'file') return null;
    if (e.size !== undefined && e.size > MAX_READ_BYTES) return null;
    if (this.filesRead.length >= MAX_FILES_READ) return null;
    this.filesRead.push(path);
    return this.#source.readFile(this.#repo, this.#sha, path, MAX_READ_BYTES);
  }
}

function byPath(a: TreeEntry, b: TreeEntry): number {
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0;
}

function indexTree(entries: readonly TreeEntry[]): Map<string, TreeEntry[]> {
  const index = new Map<string, TreeEntry[]>();
  const seen = new Set<string>();
  const add = (e: TreeEntry): void => {
    if (seen.has(e.path)) return;
    seen.add(e.path);
    const slash = e.path.lastIndexOf('/');
    const parent = slash < 0 ? '' : e.path.slice(0, slash);
    let list = index.get(parent);
    if (!list) index.set(parent, (list = []));
    list.push(e);
    // Sources may omit directory entries; every parent of a file is a directory.
    if (slash >= 0) add({ path: parent, type: 'dir' });
  };
  for (const e of entries) add(e);
  for (const list of index.values()) list.sort(byPath);
  return index;
}
