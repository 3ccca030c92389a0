import { readdirSync } from 'node:fs';
import t from 'tap';
import { LocalRepoSource } from '../../control-plane/src/providers/repo-source/local.ts';
import { classifyRepo } from '../../control-plane/src/services/scan/classify.ts';
import type { Classification, FallbackClassifier } from '../../control-plane/src/services/scan/classify.ts';
import { RepoView } from '../../control-plane/src/services/scan/repo-view.ts';
import { FIXTURE_REPOS, commitFixture, tempReposDir } from './fixture-repos.ts';

interface Expect {
  language: string;
  framework: string | null;
  buildpack: string;
  /** Files that must appear in the evidence. */
  evidence: string[];
  root?: string;
  procfile?: boolean;
  dockerfile?: boolean;
  minConfidence?: number;
}

const BASE = 'paketobuildpacks/builder-jammy-base';
const FULL = 'paketobuildpacks/builder-jammy-full';
const GCP = 'gcr.io/buildpacks/builder:v1';

const CASES: Record<string, Expect> = {
  'node-nextjs': { language: 'node', framework: 'nextjs', buildpack: BASE, evidence: ['package.json'] },
  'node-nuxt': { language: 'node', framework: 'nuxt', buildpack: BASE, evidence: ['package.json'] },
  'node-remix': { language: 'node', framework: 'remix', buildpack: BASE, evidence: ['package.json'] },
  'node-sveltekit': { language: 'node', framework: 'sveltekit', buildpack: BASE, evidence: ['package.json'] },
  'node-astro': { language: 'node', framework: 'astro', buildpack: BASE, evidence: ['package.json'] },
  'node-nestjs': { language: 'node', framework: 'nestjs', buildpack: BASE, evidence: ['package.json', 'nest-cli.json'] },
  'node-express': { language: 'node', framework: 'express', buildpack: BASE, evidence: ['package.json'] },
  'node-fastify': { language: 'node', framework: 'fastify', buildpack: BASE, evidence: ['package.json'] },
  'python-fastapi': { language: 'python', framework: 'fastapi', buildpack: GCP, evidence: ['requirements.txt', 'Procfile'], procfile: true },
  'python-django': { language: 'python', framework: 'django', buildpack: GCP, evidence: ['pyproject.toml', 'manage.py'] },
  'python-flask': { language: 'python', framework: 'flask', buildpack: GCP, evidence: ['Pipfile'] },
  'python-pep621': { language: 'python', framework: 'fastapi', buildpack: GCP, evidence: ['pyproject.toml'] },
  'ruby-rails': { language: 'ruby', framework: 'rails', buildpack: FULL, evidence: ['Gemfile', 'config/application.rb'] },
  'ruby-sinatra': { language: 'ruby', framework: 'sinatra', buildpack: FULL, evidence: ['Gemfile', 'config.ru'] },
  'go-gin': { language: 'go', framework: 'gin', buildpack: BASE, evidence: ['go.mod', 'main.go'] },
  'go-echo': { language: 'go', framework: 'echo', buildpack: BASE, evidence: ['go.mod', 'cmd/server/main.go'] },
  'go-fiber': { language: 'go', framework: 'fiber', buildpack: BASE, evidence: ['go.mod'] },
  'go-nethttp': { language: 'go', framework: 'net/http', buildpack: BASE, evidence: ['go.mod', 'main.go'] },
  'php-laravel': { language: 'php', framework: 'laravel', buildpack: FULL, evidence: ['composer.json', 'artisan'] },
  'php-symfony': { language: 'php', framework: 'symfony', buildpack: FULL, evidence: ['composer.json', 'bin/console'] },
  'java-spring-boot': { language: 'java', framework: 'spring-boot', buildpack: BASE, evidence: ['pom.xml'] },
  'kotlin-spring-boot': { language: 'kotlin', framework: 'spring-boot', buildpack: BASE, evidence: ['build.gradle.kts'] },
  'java-quarkus': { language: 'java', framework: 'quarkus', buildpack: BASE, evidence: ['build.gradle'] },
  'elixir-phoenix': { language: 'elixir', framework: 'phoenix', buildpack: FULL, evidence: ['mix.exs'] },
  'rust-axum': { language: 'rust', framework: 'axum', buildpack: 'docker.io/paketocommunity/rust', evidence: ['Cargo.toml'] },
  'rust-actix': { language: 'rust', framework: 'actix', buildpack: 'docker.io/paketocommunity/rust', evidence: ['Cargo.toml'] },
  'dotnet-aspnetcore': { language: 'dotnet', framework: 'aspnetcore', buildpack: BASE, evidence: ['Web.csproj', 'Program.cs'] },
  'static-html': { language: 'static', framework: null, buildpack: BASE, evidence: ['index.html'] },
  'static-hugo': { language: 'static', framework: 'hugo', buildpack: BASE, evidence: ['hugo.toml', 'content/'] },
  'monorepo-workspaces': { language: 'node', framework: 'express', buildpack: BASE, evidence: ['apps/api/package.json'], root: 'apps/api' },
  'monorepo-procfile': { language: 'node', framework: null, buildpack: BASE, evidence: ['package.json', 'Procfile'], procfile: true },
  'monorepo-services': { language: 'go', framework: 'gin', buildpack: BASE, evidence: ['services/api/go.mod'], root: 'services/api' },
  'ambiguous-django-assets': { language: 'python', framework: 'django', buildpack: GCP, evidence: ['requirements.txt'] },
  'ambiguous-two-servers': { language: 'python', framework: 'flask', buildpack: GCP, evidence: ['requirements.txt'] },
  'python-procfile': { language: 'python', framework: null, buildpack: GCP, evidence: ['requirements.txt', 'Procfile'], procfile: true, dockerfile: true },
  'node-library': { language: 'node', framework: null, buildpack: BASE, evidence: ['package.json'] },
  'dotnet-console': { language: 'dotnet', framework: null, buildpack: BASE, evidence: ['Tool.csproj'] },
  'unknown-docs': { language: 'unknown', framework: null, buildpack: FULL, evidence: [] },
};

const repos = await tempReposDir();
t.teardown(repos.cleanup);
const source = new LocalRepoSource({ reposDir: repos.dir });

async function classify(fixture: string, fallback?: FallbackClassifier): Promise<{ c: Classification; view: RepoView }> {
  const ref = { owner: 'fixtures', name: fixture };
  const head = await source.head(ref).catch(async () => {
    await commitFixture(repos.dir, fixture, 'fixtures', fixture);
    return source.head(ref);
  });
  const view = await RepoView.open(source, ref, head.sha);
  return { c: await classifyRepo(view, { repo: `fixtures/${fixture}`, fallback: fallback ?? null }), view };
}

t.test('every fixture repository has an expectation', async (t) => {
  t.same(readdirSync(FIXTURE_REPOS).sort(), Object.keys(CASES).sort());
});

for (const [fixture, want] of Object.entries(CASES)) {
  t.test(`${fixture} is classified as ${want.language}/${want.framework ?? 'no framework'} with its evidence`, async (t) => {
    const { c } = await classify(fixture);
    t.equal(c.language, want.language, 'language');
    t.equal(c.framework, want.framework, 'framework');
    t.equal(c.buildpack, want.buildpack, 'buildpack');
    t.equal(c.root, want.root ?? '.', 'root');
    t.equal(c.procfile_detected, want.procfile ?? false, 'procfile_detected');
    t.equal(c.dockerfile_detected, want.dockerfile ?? false, 'dockerfile_detected');
    const files = c.evidence.map((e) => e.file);
    for (const f of want.evidence) t.ok(files.includes(f), `evidence names ${f} (got ${files.join(', ')})`);
    for (const e of c.evidence) t.ok(e.reason.length > 0, `evidence for ${e.file} says why`);
    t.ok(c.confidence >= 0 && c.confidence <= 1, 'confidence is within 0..1');
    t.ok(c.reason.length > 20, 'the result says why');
  });
}

t.test('the contract example: a FastAPI repo with a Procfile gets the contract answer', async (t) => {
  const { c } = await classify('python-fastapi');
  t.match(c, { language: 'python', framework: 'fastapi', buildpack: 'gcr.io/buildpacks/builder:v1', procfile_detected: true, dockerfile_detected: false });
  t.ok(c.confidence >= 0.95, 'a declared framework plus a server is near certain');
});

t.test('a monorepo explains why its root is not the app and names the other deployable candidates', async (t) => {
  const { c } = await classify('monorepo-workspaces');
  t.match(c.reason, /workspace/);
  t.match(c.reason, /apps\/api is the first deployable candidate/);
  t.match(c.reason, /Also deployable: apps\/web \(node\.nextjs\)/);
  t.ok(c.confidence < 0.9, 'competing apps lower the confidence');
});

t.test('libraries in packages/* and non-framework dirs are skipped when choosing the root', async (t) => {
  const { c } = await classify('monorepo-services');
  t.equal(c.root, 'services/api');
  t.notMatch(c.reason, /services\/worker \(/, 'a python package without a server is not deployable');
});

t.test('two servers in one root: the choice is deterministic and the rival is named', async (t) => {
  const first = await classify('ambiguous-two-servers');
  const again = await classify('ambiguous-two-servers');
  t.same(again.c, first.c, 'same input, same answer');
  t.match(first.c.reason, /node\.express also matched at the same root \(package\.json\); python\.flask wins on confidence/);
  t.ok(first.c.confidence <= 0.85, 'ambiguity lowers the confidence');
});

t.test('asset tooling does not outvote the server framework', async (t) => {
  const { c } = await classify('ambiguous-django-assets');
  t.equal(c.framework, 'django');
  t.ok(c.confidence >= 0.9, 'a node package without a start script is no rival');
});

t.test('classification reads manifests only, not the whole repository', async (t) => {
  const { view } = await classify('node-nextjs');
  t.notOk(view.filesRead.includes('app/page.tsx.txt'), 'source files are not read');
  t.ok(view.filesRead.length <= 3, `read ${view.filesRead.join(', ')}`);
});

t.test('an unrecognisable repo asks the model classifier when one is configured', async (t) => {
  const asked: string[][] = [];
  const fallback: FallbackClassifier = {
    name: 'stub',
    async classify(input) {
      asked.push(input.files);
      return { language: 'ruby', framework: 'sinatra', confidence: 0.9, reason: 'looks like it' };
    },
  };
  const { c } = await classify('unknown-docs', fallback);
  t.equal(asked.length, 1);
  t.ok(asked[0]?.includes('README.md'), 'the model sees root file names');
  t.match(c, { language: 'ruby', framework: 'sinatra', classifier: 'model' });
  t.ok(c.confidence <= 0.6, 'a model answer is capped below rule confidence');
  const decided = await classify('node-express', fallback);
  t.equal(asked.length, 1, 'the model is not asked when the rules decide');
  t.equal(decided.c.classifier, 'rules');
});

t.test('a failing model classifier leaves the rules answer standing', async (t) => {
  const { c } = await classify('unknown-docs', {
    name: 'broken',
    async classify() {
      throw new Error('down');
    },
  });
  t.match(c, { language: 'unknown', classifier: 'none', confidence: 0 });
});
