/**
 * Readers for the manifests the rules look into. Each returns the dependency names a
 * manifest declares, lower-cased where the ecosystem is case-insensitive. They are
 * deliberately small line-oriented readers: they need names, not a full TOML/XML/Ruby
 * parser, and they never execute anything from the repository.
 */

export type Ecosystem = 'npm' | 'pypi' | 'gem' | 'go' | 'composer' | 'jvm' | 'mix' | 'cargo' | 'nuget';

/** Which files at an app root declare dependencies, per ecosystem, in the order read. */
export const MANIFEST_FILES: Record<Ecosystem, readonly string[]> = {
  npm: ['package.json'],
  pypi: ['requirements.txt', 'pyproject.toml', 'Pipfile'],
  gem: ['Gemfile'],
  go: ['go.mod'],
  composer: ['composer.json'],
  jvm: ['pom.xml', 'build.gradle', 'build.gradle.kts'],
  mix: ['mix.exs'],
  cargo: ['Cargo.toml'],
  nuget: ['*.csproj'],
};

export interface PackageJson {
  dependencies: Set<string>;
  scripts: Record<string, string>;
  workspaces: boolean;
}

export function readPackageJson(text: string): PackageJson | null {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return null;
  const d = doc as Record<string, unknown>;
  const deps = new Set<string>();
  for (const field of ['dependencies', 'devDependencies', 'peerDependencies', 'optionalDependencies']) {
    const v = d[field];
    if (typeof v === 'object' && v !== null) for (const k of Object.keys(v)) deps.add(k);
  }
  const scripts: Record<string, string> = {};
  if (typeof d.scripts === 'object' && d.scripts !== null) {
    for (const [k, v] of Object.entries(d.scripts as Record<string, unknown>)) if (typeof v === 'string') scripts[k] = v;
  }
  return { dependencies: deps, scripts, workspaces: d.workspaces !== undefined };
}

/** PEP 503 normalisation: case-insensitive, runs of -_. are one hyphen. */
export function normalizePyName(name: string): string {
  return name.toLowerCase().replace(/[-_.]+/g, '-');
}

/** `name[extra]>=1; marker` lines; skips comments, options (-r, -e, --hash) and URLs. */
export function readRequirements(text: string): Set<string> {
  const out = new Set<string>();
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/\s+#.*$/, '').trim();
    if (line === '' || line.startsWith('#') || line.startsWith('-')) continue;
    const m = /^([A-Za-z0-9][A-Za-z0-9._-]*)/.exec(line);
    if (m?.[1] && !line.includes('://')) out.add(normalizePyName(m[1]));
  }
  return out;
}

/**
 * Files a requirements file pulls in: `-r x.txt`, `--requirement x.txt` (also `=x`)
 * and constraints files `-c` / `--constraint`, as written (relative to the including file).
 */
export function readRequirementIncludes(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/\s+#.*$/, '').trim();
    const m = /^(?:-r|-c|--requirement|--constraint)(?:\s*=\s*|\s+|(?<=^-[rc]))(\S+)$/.exec(line);
    if (m?.[1] && !m[1].includes('://')) out.push(m[1]);
  }
  return out;
}

interface TomlSection {
  name: string;
  /** `key = value` pairs, multi-line arrays joined. */
  entries: Map<string, string>;
}

/** Splits TOML into `[section]` tables of raw key/value text: enough to read names. */
export function readTomlSections(text: string): TomlSection[] {
  const sections: TomlSection[] = [{ name: '', entries: new Map() }];
  let pendingKey: string | null = null;
  let pendingValue = '';
  let depth = 0;
  for (const raw of text.split(/\r?\n/)) {
    const line = stripTomlComment(raw).trim();
    if (pendingKey !== null) {
      pendingValue += ` ${line}`;
      depth += bracketDelta(line);
      if (depth <= 0) {
        sections.at(-1)?.entries.set(pendingKey, pendingValue.trim());
        pendingKey = null;
      }
      continue;
    }
    if (line === '') continue;
    const header = /^\[\[?\s*([^\]]+?)\s*\]\]?$/.exec(line);
    if (header?.[1]) {
      sections.push({ name: header[1].replace(/["']/g, ''), entries: new Map() });
      continue;
    }
    const kv = /^("?[^=]+?"?)\s*=\s*(.*)$/.exec(line);
    if (!kv?.[1] || kv[2] === undefined) continue;
    const key = kv[1].replace(/^"|"$/g, '').trim();
    depth = bracketDelta(kv[2]);
    if (depth > 0) {
      pendingKey = key;
      pendingValue = kv[2];
    } else {
      sections.at(-1)?.entries.set(key, kv[2]);
    }
  }
  return sections;
}

function stripTomlComment(line: string): string {
  let inString: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (inString) {
      if (c === inString && line[i - 1] !== '\\') inString = null;
    } else if (c === '"' || c === "'") {
      inString = c;
    } else if (c === '#') {
      return line.slice(0, i);
    }
  }
  return line;
}

function bracketDelta(s: string): number {
  let d = 0;
  for (const c of s.replace(/"(?:[^"\\]|\\.)*"|'[^']*'/g, '')) {
    if (c === '[' || c === '{') d++;
    else if (c === ']' || c === '}') d--;
  }
  return d;
}

function quotedStrings(value: string): string[] {
  return [...value.matchAll(/"((?:[^"\\]|\\.)*)"|'([^']*)'/g)].map((m) => m[1] ?? m[2] ?? '');
}

/** PEP 621 `[project] dependencies`, Poetry `[tool.poetry.*dependencies]`, PDM/uv groups. */
export function readPyproject(text: string): Set<string> {
  const out = new Set<string>();
  for (const s of readTomlSections(text)) {
    if (s.name === 'project') {
      for (const req of quotedStrings(s.entries.get('dependencies') ?? '')) addPyRequirement(out, req);
    } else if (s.name === 'project.optional-dependencies' || s.name === 'dependency-groups' || s.name === 'tool.pdm.dev-dependencies') {
      for (const v of s.entries.values()) for (const req of quotedStrings(v)) addPyRequirement(out, req);
    } else if (/^tool\.poetry(\.group\.[^.]+)?\.(dev-)?dependencies$/.test(s.name)) {
      for (const k of s.entries.keys()) if (k !== 'python') out.add(normalizePyName(k));
    }
  }
  return out;
}

function addPyRequirement(out: Set<string>, req: string): void {
  const m = /^\s*([A-Za-z0-9][A-Za-z0-9._-]*)/.exec(req);
  if (m?.[1]) out.add(normalizePyName(m[1]));
}

/** Pipfile `[packages]` and `[dev-packages]` keys. */
export function readPipfile(text: string): Set<string> {
  const out = new Set<string>();
  for (const s of readTomlSections(text)) {
    if (s.name === 'packages' || s.name === 'dev-packages') for (const k of s.entries.keys()) out.add(normalizePyName(k));
  }
  return out;
}

/** `gem 'name'` / `gem "name"` lines of a Gemfile. */
export function readGemfile(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/^\s*gem\s*\(?\s*["']([^"']+)["']/gm)) if (m[1]) out.add(m[1].toLowerCase());
  return out;
}

/** Module paths in go.mod `require` lines and blocks. */
export function readGoMod(text: string): Set<string> {
  const out = new Set<string>();
  let inBlock = false;
  for (const raw of text.split(/\r?\n/)) {
    const line = raw.replace(/\/\/.*$/, '').trim();
    if (inBlock) {
      if (line === ')') inBlock = false;
      else if (line !== '') out.add(line.split(/\s+/)[0] ?? '');
      continue;
    }
    if (/^require\s*\($/.test(line)) inBlock = true;
    else {
      const m = /^require\s+(\S+)/.exec(line);
      if (m?.[1]) out.add(m[1]);
    }
  }
  out.delete('');
  return out;
}

/** Imported package paths of Go source files (single and grouped imports). */
export function readGoImports(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/^\s*import\s+(?:[\w.]+\s+)?"([^"]+)"/gm)) if (m[1]) out.add(m[1]);
  for (const block of text.matchAll(/^\s*import\s*\(([\s\S]*?)\)/gm)) {
    for (const m of (block[1] ?? '').matchAll(/(?:^|\n)\s*(?:[\w.]+\s+)?"([^"]+)"/g)) if (m[1]) out.add(m[1]);
  }
  return out;
}

/** composer.json `require` and `require-dev` package names. */
export function readComposer(text: string): Set<string> {
  const out = new Set<string>();
  try {
    const doc = JSON.parse(text) as Record<string, unknown>;
    for (const field of ['require', 'require-dev']) {
      const v = doc[field];
      if (typeof v === 'object' && v !== null) for (const k of Object.keys(v)) out.add(k.toLowerCase());
    }
  } catch {
    // not JSON: no dependencies to report
  }
  return out;
}

/**
 * Maven and Gradle coordinates: each groupId, `group:artifact` and plugin id, so a
 * rule can ask for `org.springframework.boot` or `io.quarkus:quarkus-rest`.
 */
export function readJvmBuild(text: string, file: string): Set<string> {
  const out = new Set<string>();
  if (file.endsWith('.xml')) {
    for (const m of text.matchAll(/<(dependency|plugin|parent)>([\s\S]*?)<\/\1>/g)) {
      const body = m[2] ?? '';
      const group = /<groupId>\s*([^<\s]+)\s*<\/groupId>/.exec(body)?.[1];
      const artifact = /<artifactId>\s*([^<\s]+)\s*<\/artifactId>/.exec(body)?.[1];
      if (group) out.add(group);
      if (group && artifact) out.add(`${group}:${artifact}`);
      if (artifact) out.add(artifact);
    }
    return out;
  }
  for (const m of text.matchAll(/id\s*\(?\s*["']([\w.-]+)["']/g)) if (m[1]) out.add(m[1]);
  for (const m of text.matchAll(/kotlin\s*\(\s*["']([\w.-]+)["']\s*\)/g)) if (m[1]) out.add(`org.jetbrains.kotlin.${m[1]}`);
  for (const m of text.matchAll(/["']([\w.-]+):([\w.-]+)(?::[^"']*)?["']/g)) {
    if (m[1] && m[2]) {
      out.add(m[1]);
      out.add(`${m[1]}:${m[2]}`);
    }
  }
  return out;
}

/** `{:name, ...}` dependency tuples in mix.exs. */
export function readMixExs(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/\{\s*:([a-z_][a-z0-9_]*)\s*,/g)) if (m[1]) out.add(m[1]);
  return out;
}

/** Cargo.toml `[dependencies]`, `[dev-dependencies]`, `[workspace.dependencies]` keys. */
export function readCargoToml(text: string): Set<string> {
  const out = new Set<string>();
  for (const s of readTomlSections(text)) {
    if (/^(workspace\.)?(dev-|build-)?dependencies$/.test(s.name)) for (const k of s.entries.keys()) out.add(k.toLowerCase());
    const dotted = /^(?:workspace\.)?dependencies\.([\w-]+)$/.exec(s.name);
    if (dotted?.[1]) out.add(dotted[1].toLowerCase());
  }
  return out;
}

/** `<PackageReference Include="Name" />` items of a .csproj. */
export function readCsproj(text: string): Set<string> {
  const out = new Set<string>();
  for (const m of text.matchAll(/<PackageReference\s+Include\s*=\s*"([^"]+)"/g)) if (m[1]) out.add(m[1].toLowerCase());
  return out;
}

/** Dependency names one manifest declares, by file name. */
export function readDependencies(ecosystem: Ecosystem, file: string, text: string): Set<string> {
  const base = file.slice(file.lastIndexOf('/') + 1);
  switch (ecosystem) {
    case 'npm':
      return readPackageJson(text)?.dependencies ?? new Set();
    case 'pypi':
      if (base === 'pyproject.toml') return readPyproject(text);
      if (base === 'Pipfile') return readPipfile(text);
      return readRequirements(text);
    case 'gem':
      return readGemfile(text);
    case 'go':
      return readGoMod(text);
    case 'composer':
      return readComposer(text);
    case 'jvm':
      return readJvmBuild(text, base);
    case 'mix':
      return readMixExs(text);
    case 'cargo':
      return readCargoToml(text);
    case 'nuget':
      return readCsproj(text);
  }
}

/** Process types of a Procfile (`web: bundle exec puma`). */
export function readProcfile(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split(/\r?\n/)) {
    const m = /^([A-Za-z0-9_-]+):\s*(.+)$/.exec(line.trim());
    if (m?.[1] && m[2]) out.set(m[1], m[2]);
  }
  return out;
}
