import { posix } from 'node:path';
import { isSafeRepoPath } from '../../providers/repo-source/ref.ts';
import type { TreeEntry } from '../../providers/repo-source/types.ts';
import { MANIFEST_FILES, readDependencies, readGoImports, readPackageJson, readProcfile, readRequirementIncludes, readRequirements } from './manifests.ts';
import type { Ecosystem, PackageJson } from './manifests.ts';
import type { RepoView } from './repo-view.ts';
import type { Check } from './rules.ts';

export interface Evidence {
  /** Repository-relative path of the file (or `dir/`) that proved something. */
  file: string;
  reason: string;
}

/** Go files read per app root when looking for imports. */
const MAX_GO_FILES = 8;
/** requirements.txt includes: pip has no limit, but real projects nest two or three deep. */
const MAX_INCLUDE_DEPTH = 5;
const MAX_INCLUDED_FILES = 20;

/** `include` relative to the directory of `from`, as a repository path; null when it leaves the repository. */
function resolveInRepo(from: string, include: string): string | null {
  if (include.startsWith('/') || include.includes('\\') || include.includes('\0')) return null;
  const dir = from.includes('/') ? from.slice(0, from.lastIndexOf('/')) : '';
  const joined = posix.normalize(dir === '' ? include : `${dir}/${include}`);
  if (joined === '..' || joined.startsWith('../') || joined.startsWith('/')) return null;
  return isSafeRepoPath(joined) && joined !== '.' ? joined : null;
}

/**
 * One candidate app root inside a repository: evaluates rule checks against the files
 * directly under it, reading each manifest at most once and only if it exists.
 */
export class RootContext {
  readonly #deps = new Map<Ecosystem, Promise<Map<string, string>>>();
  #pkg: Promise<PackageJson | null> | undefined;
  #goImports: Promise<Map<string, string>> | undefined;

  readonly view: RepoView;
  /** '' for the repository root, else e.g. `apps/web`. */
  readonly root: string;
  constructor(
    view: RepoView,
    /** '' for the repository root, else e.g. `apps/web`. */
    root: string,
  ) {
    this.view = view;
    this.root = root;
  }

  path(rel: string): string {
    return this.root === '' ? rel : `${this.root}/${rel}`;
  }

  /** Existing entries matching a root-relative path; `*` may appear in the last segment. */
  async match(rel: string, type: TreeEntry['type']): Promise<TreeEntry[]> {
    const full = this.path(rel);
    const slash = full.lastIndexOf('/');
    const parent = slash < 0 ? '' : full.slice(0, slash);
    const name = full.slice(slash + 1);
    const entries = await this.view.list(parent);
    if (!name.includes('*')) return entries.filter((e) => e.path === full && e.type === type);
    const re = new RegExp(`^${name.split('*').map(escapeRegExp).join('[^/]*')}$`);
    return entries.filter((e) => e.type === type && re.test(e.path.slice(slash + 1)));
  }

  async evaluate(check: Check): Promise<Evidence[] | null> {
    switch (check.kind) {
      case 'file': {
        const [hit] = await this.match(check.path, 'file');
        return hit ? [{ file: hit.path, reason: 'present' }] : null;
      }
      case 'dir': {
        const [hit] = await this.match(check.path, 'dir');
        return hit ? [{ file: `${hit.path}/`, reason: 'directory present' }] : null;
      }
      case 'contains': {
        for (const hit of await this.match(check.path, 'file')) {
          const text = await this.view.read(hit.path);
          if (text !== null && check.pattern.test(text)) return [{ file: hit.path, reason: check.says }];
        }
        return null;
      }
      case 'dep': {
        const deps = await this.dependencies(check.ecosystem);
        for (const name of check.names) {
          const file = deps.get(name);
          if (file) return [{ file, reason: `declares dependency ${name}` }];
        }
        return null;
      }
      case 'script': {
        const pkg = await this.packageJson();
        const cmd = pkg?.scripts[check.name];
        return cmd === undefined ? null : [{ file: this.path('package.json'), reason: `has a "${check.name}" script: ${cmd.slice(0, 120)}` }];
      }
      case 'goImport': {
        const file = (await this.goImports()).get(check.path);
        return file ? [{ file, reason: `imports "${check.path}"` }] : null;
      }
      case 'any': {
        for (const c of check.of) {
          const ev = await this.evaluate(c);
          if (ev) return ev;
        }
        return null;
      }
    }
  }

  /** Dependency name → the manifest that declares it, over every manifest of the ecosystem present here. */
  dependencies(ecosystem: Ecosystem): Promise<Map<string, string>> {
    let p = this.#deps.get(ecosystem);
    if (!p) {
      p = this.#readDependencies(ecosystem);
      this.#deps.set(ecosystem, p);
    }
    return p;
  }

  async #readDependencies(ecosystem: Ecosystem): Promise<Map<string, string>> {
    const out = new Map<string, string>();
    for (const pattern of MANIFEST_FILES[ecosystem]) {
      for (const hit of await this.match(pattern, 'file')) {
        const text = await this.view.read(hit.path);
        if (text === null) continue;
        for (const name of readDependencies(ecosystem, hit.path, text)) if (!out.has(name)) out.set(name, hit.path);
        if (ecosystem === 'pypi' && hit.path.endsWith('.txt')) await this.#followRequirementIncludes(hit.path, text, out);
      }
    }
    return out;
  }

  /**
   * `-r` / `-c` includes of a requirements file, breadth first: each path relative to
   * the file naming it, never outside the repository, each file read once (so cycles
   * end), at most MAX_INCLUDE_DEPTH levels and MAX_INCLUDED_FILES files.
   */
  async #followRequirementIncludes(from: string, text: string, out: Map<string, string>): Promise<void> {
    const seen = new Set([from]);
    let level: { path: string; text: string }[] = [{ path: from, text }];
    for (let depth = 0; depth < MAX_INCLUDE_DEPTH && level.length > 0; depth++) {
      const next: { path: string; text: string }[] = [];
      for (const file of level) {
        for (const include of readRequirementIncludes(file.text)) {
          const target = resolveInRepo(file.path, include);
          if (target === null || seen.has(target) || seen.size > MAX_INCLUDED_FILES) continue;
          seen.add(target);
          const body = await this.view.read(target);
          if (body === null) continue;
          for (const name of readRequirements(body)) if (!out.has(name)) out.set(name, target);
          next.push({ path: target, text: body });
        }
      }
      level = next;
    }
  }

  packageJson(): Promise<PackageJson | null> {
    this.#pkg ??= this.view.read(this.path('package.json')).then((t) => (t === null ? null : readPackageJson(t)));
    return this.#pkg;
  }

  /** Import path → first Go file importing it, over root *.go and cmd/<x>/main.go. */
  goImports(): Promise<Map<string, string>> {
    this.#goImports ??= this.#readGoImports();
    return this.#goImports;
  }

  async #readGoImports(): Promise<Map<string, string>> {
    const files = (await this.match('*.go', 'file')).filter((e) => !e.path.endsWith('_test.go'));
    for (const cmd of await this.match('cmd/*', 'dir')) {
      const main = (await this.view.list(cmd.path)).find((e) => e.path === `${cmd.path}/main.go`);
      if (main) files.push(main);
    }
    const out = new Map<string, string>();
    for (const f of files.slice(0, MAX_GO_FILES)) {
      const text = await this.view.read(f.path);
      if (text === null) continue;
      for (const imp of readGoImports(text)) if (!out.has(imp)) out.set(imp, f.path);
    }
    return out;
  }

  /** The command of the Procfile's `web` process at this root, if any. */
  async procfileWeb(): Promise<string | null> {
    const [hit] = await this.match('Procfile', 'file');
    if (!hit) return null;
    const text = await this.view.read(hit.path);
    return text === null ? null : (readProcfile(text).get('web') ?? null);
  }

  /** Why this root looks like a monorepo's workspace root, or null. */
  async workspaceMarker(): Promise<Evidence | null> {
    for (const name of ['pnpm-workspace.yaml', 'turbo.json', 'nx.json', 'lerna.json', 'go.work']) {
      const [hit] = await this.match(name, 'file');
      if (hit) return { file: hit.path, reason: 'declares a multi-package workspace' };
    }
    const pkg = (await this.match('package.json', 'file')).length > 0 ? await this.packageJson() : null;
    if (pkg?.workspaces) return { file: this.path('package.json'), reason: 'declares npm/yarn workspaces' };
    const cargo = await this.evaluate({ kind: 'contains', path: 'Cargo.toml', pattern: /^\s*\[workspace\]/m, says: 'is a Cargo workspace' });
    return cargo?.[0] ?? null;
  }
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
