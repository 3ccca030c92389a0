import type { Ecosystem } from './manifests.ts';

/**
 * The classifier's knowledge, as data. A rule matches an app root when every check in
 * `needs` holds; each check in `boosts` that also holds adds evidence and +0.02
 * confidence (capped at 0.99). Checks look only at the app root (paths are relative
 * to it) and say which file proved them, which becomes the scan's `evidence`.
 *
 * Order matters only to break ties: when several rules match one root, the winner is
 * the deployable one (role web/static beats library), then the higher confidence,
 * then the earlier rule in this table. That is why meta-frameworks (Next.js, Remix,
 * NestJS) come before the servers they embed (Express, Fastify), and Kotlin variants
 * before their Java twins.
 */

export type Check =
  /** A file exists; `*` is allowed in the last segment (`*.csproj`). */
  | { kind: 'file'; path: string }
  | { kind: 'dir'; path: string }
  /** A file's text matches; `says` is the evidence sentence. */
  | { kind: 'contains'; path: string; pattern: RegExp; says: string }
  /** One of `names` is declared in the ecosystem's manifests (see MANIFEST_FILES). */
  | { kind: 'dep'; ecosystem: Ecosystem; names: readonly string[] }
  /** package.json has this script. */
  | { kind: 'script'; name: string }
  /** A Go source file at the root or under cmd/* imports this package. */
  | { kind: 'goImport'; path: string }
  | { kind: 'any'; of: readonly Check[] };

/** web: a long-running server; static: files served by a web server; library: not deployable on its own. */
export type Role = 'web' | 'static' | 'library';

export type Language = 'node' | 'python' | 'ruby' | 'go' | 'php' | 'java' | 'kotlin' | 'elixir' | 'rust' | 'dotnet' | 'static';

export interface Rule {
  id: string;
  language: Language;
  framework: string | null;
  role: Role;
  confidence: number;
  needs: readonly Check[];
  boosts?: readonly Check[];
}

const file = (path: string): Check => ({ kind: 'file', path });
const dir = (path: string): Check => ({ kind: 'dir', path });
const anyFile = (...paths: string[]): Check => ({ kind: 'any', of: paths.map(file) });
const dep = (ecosystem: Ecosystem, ...names: string[]): Check => ({ kind: 'dep', ecosystem, names });
const script = (name: string): Check => ({ kind: 'script', name });
const goImport = (path: string): Check => ({ kind: 'goImport', path });
const contains = (path: string, pattern: RegExp, says: string): Check => ({ kind: 'contains', path, pattern, says });
const any = (...of: Check[]): Check => ({ kind: 'any', of });

const pythonManifest = anyFile('requirements.txt', 'pyproject.toml', 'Pipfile', 'setup.py');
const kotlinBuild = any(
  dep('jvm', 'org.jetbrains.kotlin.jvm', 'org.jetbrains.kotlin.plugin.spring', 'org.jetbrains.kotlin'),
  contains('pom.xml', /kotlin-maven-plugin/, 'builds with kotlin-maven-plugin'),
  dir('src/main/kotlin'),
);
const springBoot = dep('jvm', 'org.springframework.boot');
const quarkus = dep('jvm', 'io.quarkus', 'io.quarkus.platform');

export const RULES: readonly Rule[] = [
  // ---- Node.js ------------------------------------------------------------------------
  { id: 'node.nextjs', language: 'node', framework: 'nextjs', role: 'web', confidence: 0.95,
    needs: [dep('npm', 'next')], boosts: [anyFile('next.config.js', 'next.config.mjs', 'next.config.ts')] },
  { id: 'node.nuxt', language: 'node', framework: 'nuxt', role: 'web', confidence: 0.95,
    needs: [dep('npm', 'nuxt', 'nuxt3')], boosts: [anyFile('nuxt.config.ts', 'nuxt.config.js')] },
  { id: 'node.remix', language: 'node', framework: 'remix', role: 'web', confidence: 0.95,
    needs: [dep('npm', '@remix-run/node', '@remix-run/serve', '@remix-run/express', '@remix-run/dev')],
    boosts: [anyFile('remix.config.js', 'remix.config.mjs')] },
  { id: 'node.sveltekit', language: 'node', framework: 'sveltekit', role: 'web', confidence: 0.95,
    needs: [dep('npm', '@sveltejs/kit')], boosts: [anyFile('svelte.config.js', 'svelte.config.ts')] },
  { id: 'node.astro', language: 'node', framework: 'astro', role: 'web', confidence: 0.95,
    needs: [dep('npm', 'astro')], boosts: [anyFile('astro.config.mjs', 'astro.config.ts', 'astro.config.js')] },
  { id: 'node.nestjs', language: 'node', framework: 'nestjs', role: 'web', confidence: 0.95,
    needs: [dep('npm', '@nestjs/core')], boosts: [file('nest-cli.json')] },
  { id: 'node.fastify', language: 'node', framework: 'fastify', role: 'web', confidence: 0.9,
    needs: [dep('npm', 'fastify')], boosts: [script('start')] },
  { id: 'node.express', language: 'node', framework: 'express', role: 'web', confidence: 0.9,
    needs: [dep('npm', 'express')], boosts: [script('start')] },
  { id: 'node.gatsby', language: 'node', framework: 'gatsby', role: 'static', confidence: 0.9,
    needs: [dep('npm', 'gatsby')], boosts: [anyFile('gatsby-config.js', 'gatsby-config.ts')] },
  { id: 'node.eleventy', language: 'node', framework: 'eleventy', role: 'static', confidence: 0.9,
    needs: [dep('npm', '@11ty/eleventy')], boosts: [anyFile('.eleventy.js', 'eleventy.config.js', 'eleventy.config.mjs')] },
  { id: 'node.vite', language: 'node', framework: 'vite', role: 'static', confidence: 0.85,
    needs: [dep('npm', 'vite'), file('index.html')], boosts: [anyFile('vite.config.ts', 'vite.config.js', 'vite.config.mjs')] },
  { id: 'node.start-script', language: 'node', framework: null, role: 'web', confidence: 0.6,
    needs: [file('package.json'), script('start')] },
  { id: 'node.package', language: 'node', framework: null, role: 'library', confidence: 0.3,
    needs: [file('package.json')] },

  // ---- Python -------------------------------------------------------------------------
  { id: 'python.django', language: 'python', framework: 'django', role: 'web', confidence: 0.95,
    needs: [dep('pypi', 'django')], boosts: [file('manage.py')] },
  { id: 'python.fastapi', language: 'python', framework: 'fastapi', role: 'web', confidence: 0.95,
    needs: [dep('pypi', 'fastapi')], boosts: [dep('pypi', 'uvicorn', 'gunicorn', 'hypercorn')] },
  { id: 'python.flask', language: 'python', framework: 'flask', role: 'web', confidence: 0.95,
    needs: [dep('pypi', 'flask')], boosts: [dep('pypi', 'gunicorn', 'waitress')] },
  { id: 'python.package', language: 'python', framework: null, role: 'library', confidence: 0.4,
    needs: [pythonManifest] },

  // ---- Ruby ---------------------------------------------------------------------------
  { id: 'ruby.rails', language: 'ruby', framework: 'rails', role: 'web', confidence: 0.95,
    needs: [dep('gem', 'rails', 'railties')], boosts: [file('config/application.rb'), file('bin/rails')] },
  { id: 'ruby.sinatra', language: 'ruby', framework: 'sinatra', role: 'web', confidence: 0.9,
    needs: [dep('gem', 'sinatra')], boosts: [file('config.ru')] },
  { id: 'ruby.jekyll', language: 'ruby', framework: 'jekyll', role: 'static', confidence: 0.9,
    needs: [dep('gem', 'jekyll')], boosts: [file('_config.yml')] },
  { id: 'ruby.rack', language: 'ruby', framework: null, role: 'web', confidence: 0.6,
    needs: [file('Gemfile'), file('config.ru')] },
  { id: 'ruby.package', language: 'ruby', framework: null, role: 'library', confidence: 0.4,
    needs: [file('Gemfile')] },

  // ---- Go -----------------------------------------------------------------------------
  { id: 'go.gin', language: 'go', framework: 'gin', role: 'web', confidence: 0.95,
    needs: [dep('go', 'github.com/gin-gonic/gin')], boosts: [goImport('github.com/gin-gonic/gin')] },
  { id: 'go.echo', language: 'go', framework: 'echo', role: 'web', confidence: 0.95,
    needs: [dep('go', 'github.com/labstack/echo/v4', 'github.com/labstack/echo')],
    boosts: [any(goImport('github.com/labstack/echo/v4'), goImport('github.com/labstack/echo'))] },
  { id: 'go.fiber', language: 'go', framework: 'fiber', role: 'web', confidence: 0.95,
    needs: [dep('go', 'github.com/gofiber/fiber/v2', 'github.com/gofiber/fiber/v3', 'github.com/gofiber/fiber')],
    boosts: [any(goImport('github.com/gofiber/fiber/v2'), goImport('github.com/gofiber/fiber/v3'))] },
  { id: 'go.net-http', language: 'go', framework: 'net/http', role: 'web', confidence: 0.8,
    needs: [file('go.mod'), goImport('net/http')] },
  { id: 'go.module', language: 'go', framework: null, role: 'library', confidence: 0.4,
    needs: [file('go.mod')] },

  // ---- PHP ----------------------------------------------------------------------------
  { id: 'php.laravel', language: 'php', framework: 'laravel', role: 'web', confidence: 0.95,
    needs: [dep('composer', 'laravel/framework')], boosts: [file('artisan')] },
  { id: 'php.symfony', language: 'php', framework: 'symfony', role: 'web', confidence: 0.95,
    needs: [dep('composer', 'symfony/framework-bundle')], boosts: [file('bin/console'), file('symfony.lock')] },
  { id: 'php.plain', language: 'php', framework: null, role: 'web', confidence: 0.6,
    needs: [anyFile('index.php', 'public/index.php')] },
  { id: 'php.package', language: 'php', framework: null, role: 'library', confidence: 0.4,
    needs: [file('composer.json')] },

  // ---- Java and Kotlin (Kotlin first: same frameworks, Kotlin build) ----------------------
  { id: 'kotlin.spring-boot', language: 'kotlin', framework: 'spring-boot', role: 'web', confidence: 0.95,
    needs: [springBoot, kotlinBuild] },
  { id: 'kotlin.quarkus', language: 'kotlin', framework: 'quarkus', role: 'web', confidence: 0.95,
    needs: [quarkus, kotlinBuild] },
  { id: 'java.spring-boot', language: 'java', framework: 'spring-boot', role: 'web', confidence: 0.95,
    needs: [springBoot], boosts: [dir('src/main/java')] },
  { id: 'java.quarkus', language: 'java', framework: 'quarkus', role: 'web', confidence: 0.95,
    needs: [quarkus], boosts: [dir('src/main/java')] },
  { id: 'java.build', language: 'java', framework: null, role: 'library', confidence: 0.4,
    needs: [anyFile('pom.xml', 'build.gradle', 'build.gradle.kts')] },

  // ---- Elixir -------------------------------------------------------------------------
  { id: 'elixir.phoenix', language: 'elixir', framework: 'phoenix', role: 'web', confidence: 0.95,
    needs: [dep('mix', 'phoenix')], boosts: [file('config/config.exs')] },
  { id: 'elixir.mix', language: 'elixir', framework: null, role: 'library', confidence: 0.4,
    needs: [file('mix.exs')] },

  // ---- Rust ---------------------------------------------------------------------------
  { id: 'rust.axum', language: 'rust', framework: 'axum', role: 'web', confidence: 0.95,
    needs: [dep('cargo', 'axum')], boosts: [file('Cargo.lock')] },
  { id: 'rust.actix', language: 'rust', framework: 'actix', role: 'web', confidence: 0.95,
    needs: [dep('cargo', 'actix-web')], boosts: [file('Cargo.lock')] },
  { id: 'rust.crate', language: 'rust', framework: null, role: 'library', confidence: 0.4,
    needs: [file('Cargo.toml')] },

  // ---- .NET ---------------------------------------------------------------------------
  { id: 'dotnet.aspnetcore', language: 'dotnet', framework: 'aspnetcore', role: 'web', confidence: 0.95,
    needs: [contains('*.csproj', /Sdk\s*=\s*"Microsoft\.NET\.Sdk\.Web"/, 'uses the Microsoft.NET.Sdk.Web SDK')],
    boosts: [file('Program.cs')] },
  { id: 'dotnet.project', language: 'dotnet', framework: null, role: 'library', confidence: 0.4,
    needs: [anyFile('*.csproj', '*.fsproj', '*.sln')] },

  // ---- Static sites -------------------------------------------------------------------
  { id: 'static.hugo', language: 'static', framework: 'hugo', role: 'static', confidence: 0.9,
    needs: [any(anyFile('hugo.toml', 'hugo.yaml', 'hugo.json'), contains('config.toml', /^\s*baseURL\s*=/m, 'sets a Hugo baseURL'))],
    boosts: [dir('content'), dir('layouts')] },
  { id: 'static.html', language: 'static', framework: null, role: 'static', confidence: 0.7,
    needs: [file('index.html')] },
];

/** Bumped whenever RULES change meaning, so stored scans from older rules are not reused. */
export const RULES_VERSION = 1;
