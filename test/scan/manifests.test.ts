import t from 'tap';
import {
  readCargoToml,
  readComposer,
  readCsproj,
  readGemfile,
  readGoImports,
  readGoMod,
  readJvmBuild,
  readMixExs,
  readPackageJson,
  readPipfile,
  readProcfile,
  readPyproject,
  readRequirements,
} from '../../control-plane/src/services/scan/manifests.ts';

t.test('requirements.txt names survive extras, markers, comments, options and URLs', async (t) => {
  const deps = readRequirements(
    ['# comment', 'Flask[async]>=3 ; python_version>"3.8"', '-r base.txt', '--hash=sha256:abc', 'Django_Rest.Framework==3', 'git+https://x/y.git', 'uvicorn  # server', ''].join('\n'),
  );
  t.same([...deps].sort(), ['django-rest-framework', 'flask', 'uvicorn']);
});

t.test('pyproject.toml: PEP 621, optional groups and Poetry tables', async (t) => {
  const pep = readPyproject('[project]\nname = "x"\ndependencies = [\n  "FastAPI>=0.1", # web\n  \'pydantic\',\n]\n[project.optional-dependencies]\ndev = ["pytest"]\n');
  t.same([...pep].sort(), ['fastapi', 'pydantic', 'pytest']);
  const poetry = readPyproject('[tool.poetry.dependencies]\npython = "^3.12"\nDjango = { version = "^5", extras = ["argon2"] }\n[tool.poetry.group.dev.dependencies]\nblack = "*"\n');
  t.same([...poetry].sort(), ['black', 'django']);
  t.same([...readPipfile('[packages]\n"Flask" = "*"\n[dev-packages]\npytest = "*"\n[requires]\npython_version = "3.12"\n')].sort(), ['flask', 'pytest']);
});

t.test('Gemfile, go.mod, composer.json, mix.exs, Cargo.toml, csproj and Procfile readers', async (t) => {
  t.same([...readGemfile("source 'x'\ngem 'rails', '~> 8'\n  gem(\"puma\")\n# gem 'nope'\n")].sort(), ['puma', 'rails']);
  t.same([...readGoMod('module m\nrequire github.com/a/b v1 // c\nrequire (\n\tgithub.com/c/d v2\n\t// x\n)\n')].sort(), ['github.com/a/b', 'github.com/c/d']);
  t.same([...readGoImports('package main\nimport "fmt"\nimport (\n\t"net/http"\n\tgin "github.com/gin-gonic/gin"\n)\n')].sort(), ['fmt', 'github.com/gin-gonic/gin', 'net/http']);
  t.same([...readComposer('{"require":{"Laravel/Framework":"^11"},"require-dev":{"phpunit/phpunit":"*"}}')].sort(), ['laravel/framework', 'phpunit/phpunit']);
  t.same(readComposer('not json').size, 0);
  t.same([...readMixExs('defp deps do\n [{:phoenix, "~> 1.7"}, {:jason, ">= 0.0.0"}]\nend')].sort(), ['jason', 'phoenix']);
  t.same([...readCargoToml('[package]\nname="x"\n[dependencies]\naxum = "0.7"\n[dependencies.tokio]\nversion = "1"\n[dev-dependencies]\nreqwest = "0.12"\n')].sort(), ['axum', 'reqwest', 'tokio']);
  t.same([...readCsproj('<ItemGroup><PackageReference Include="Swashbuckle.AspNetCore" Version="6" /></ItemGroup>')], ['swashbuckle.aspnetcore']);
  t.same([...readProcfile('web: gunicorn app:app\nworker: celery -A x worker\n')], [['web', 'gunicorn app:app'], ['worker', 'celery -A x worker']]);
});

t.test('Maven and Gradle coordinates include groups, group:artifact and plugin ids', async (t) => {
  const pom = readJvmBuild('<project><parent><groupId>org.springframework.boot</groupId><artifactId>spring-boot-starter-parent</artifactId></parent><dependencies><dependency><groupId>io.quarkus</groupId><artifactId>quarkus-rest</artifactId></dependency></dependencies></project>', 'pom.xml');
  t.ok(pom.has('org.springframework.boot'));
  t.ok(pom.has('io.quarkus:quarkus-rest'));
  const kts = readJvmBuild('plugins { id("org.springframework.boot") version "3"; kotlin("jvm") version "2" }\ndependencies { implementation("io.ktor:ktor-server:2") }', 'build.gradle.kts');
  t.ok(kts.has('org.springframework.boot'));
  t.ok(kts.has('org.jetbrains.kotlin.jvm'));
  t.ok(kts.has('io.ktor:ktor-server'));
});

t.test('package.json: dependencies of every kind, scripts, workspaces; broken JSON is no package', async (t) => {
  const p = readPackageJson('{"dependencies":{"next":"1"},"devDependencies":{"vite":"5"},"scripts":{"start":"node x","n":3},"workspaces":["apps/*"]}');
  t.same([...(p?.dependencies ?? [])].sort(), ['next', 'vite']);
  t.same(p?.scripts, { start: 'node x' });
  t.equal(p?.workspaces, true);
  t.equal(readPackageJson('{nope'), null);
  t.equal(readPackageJson('[1]'), null);
});
