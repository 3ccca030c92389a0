import { execFile } from 'node:child_process';
import { generateKeyPairSync } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { parse, parseDocument } from 'yaml';
import { SSH_HOST_KEY_TYPES } from '@vmkit/protocol';
import { ApiError } from '../../control-plane/src/errors.ts';
import { hostFor } from '../../control-plane/src/providers/dns/types.ts';
import { GitHubClient } from '../../control-plane/src/providers/github/client.ts';
import { dispatchWorkflow } from '../../control-plane/src/providers/github/actions.ts';
import { LocalRepoSource } from '../../control-plane/src/providers/repo-source/local.ts';
import { classifyRepo } from '../../control-plane/src/services/scan/classify.ts';
import { RepoView } from '../../control-plane/src/services/scan/repo-view.ts';
import { generateScaffolding, KAMAL_VERSION, workflowInputs, WORKFLOW_FILE } from '../../control-plane/src/services/deploy/scaffold/index.ts';
import type { ScaffoldInput, Scaffolding, ScanFacts } from '../../control-plane/src/services/deploy/scaffold/index.ts';
import { FakeGitHub } from '../helpers/fake-github.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { commitFixture, tempReposDir } from '../scan/fixture-repos.ts';
import { undocumentedKeys } from './kamal-keys.ts';

const run = promisify(execFile);

const RAILS: ScanFacts = { language: 'ruby', framework: 'rails', buildpack: null, dockerfile_detected: false, procfile_detected: false, root: '.' };

function generate(over: Partial<ScaffoldInput> = {}): Scaffolding {
  return generateScaffolding({ repo: { owner: 'acme', name: 'shop' }, defaultBranch: 'main', scan: RAILS, environments: ['staging', 'production'], zone: 'apps.example.com', ...over });
}

function file(s: Scaffolding, path: string): string {
  const f = s.files.find((x) => x.path === path);
  if (!f) throw new Error(`no ${path} among ${s.files.map((x) => x.path).join(', ')}`);
  return f.content;
}

/** Strict YAML: a duplicate key or any syntax problem is an error, not a warning. */
function parseStrict(text: string): Record<string, unknown> {
  const doc = parseDocument(text, { uniqueKeys: true, strict: true });
  if (doc.errors.length > 0) throw new Error(doc.errors.map((e) => e.message).join('; '));
  return doc.toJS() as Record<string, unknown>;
}

/** Kamal deep-merges config/deploy.<dest>.yml over config/deploy.yml. */
function deepMerge(a: Record<string, unknown>, b: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...a };
  for (const [k, v] of Object.entries(b)) {
    const prev = out[k];
    out[k] = isMap(prev) && isMap(v) ? deepMerge(prev, v) : v;
  }
  return out;
}
function isMap(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

/** Scans a sample repository from test/fixtures/repos the way the scan service does. */
const repos = await tempReposDir();
t.teardown(repos.cleanup);
const source = new LocalRepoSource({ reposDir: repos.dir });
const scanned = new Map<string, Promise<ScanFacts>>();
function scanFixture(fixture: string): Promise<ScanFacts> {
  let p = scanned.get(fixture);
  if (!p) scanned.set(fixture, (p = scanOnce(fixture)));
  return p;
}
async function scanOnce(fixture: string): Promise<ScanFacts> {
  const name = fixture.replace(/[^a-z0-9-]/g, '-');
  const sha = await commitFixture(repos.dir, fixture, 'fixtures', name);
  const view = await RepoView.open(source, { owner: 'fixtures', name }, sha);
  const c = await classifyRepo(view, { repo: `fixtures/${name}` });
  return { language: c.language, framework: c.framework, buildpack: c.buildpack, dockerfile_detected: c.dockerfile_detected, procfile_detected: c.procfile_detected, root: c.root };
}

t.test('the pull request adds a Kamal config, one file per environment, the secrets file and the workflow', async (t) => {
  const s = generate();
  t.same(
    s.files.map((f) => f.path),
    ['config/deploy.yml', 'config/deploy.staging.yml', 'config/deploy.production.yml', '.kamal/secrets-common', '.github/workflows/vmkit-deploy.yml'],
  );
  t.equal(s.pr.branch, 'vmkit/scaffolding');
  t.match(s.pr.title, /VMKit/);
});

t.test('every generated YAML file parses', async (t) => {
  const s = generate();
  for (const f of s.files.filter((x) => x.path.endsWith('.yml'))) {
    t.doesNotThrow(() => parseStrict(f.content), f.path);
  }
  const config = parseStrict(file(s, 'config/deploy.yml'));
  t.equal(config.service, 'shop');
  t.equal(config.image, 'acme/shop');
  t.same(config.ssh, { user: 'kamal' });
  t.same(config.builder, { arch: 'amd64' });
  t.match(config.proxy, { app_port: 3000, healthcheck: { path: '/up' } });
  t.match(config.env, { clear: { RAILS_ENV: 'production' }, secret: ['RAILS_MASTER_KEY'] });
});

t.test("the image goes to GitHub's registry with the workflow's token, so no registry secret is needed", async (t) => {
  const s = generate({ repo: { owner: 'Acme-Corp', name: 'Shop.Web' } });
  const config = parseStrict(file(s, 'config/deploy.yml'));
  t.same(config.registry, { server: 'ghcr.io', username: ['KAMAL_REGISTRY_USERNAME'], password: ['KAMAL_REGISTRY_PASSWORD'] });
  // Kamal pushes `<registry.server>/<image>`; ghcr.io wants it lowercase.
  t.equal(`${(config.registry as { server: string }).server}/${String(config.image)}`, 'ghcr.io/acme-corp/shop.web');
  t.equal(config.service, 'shop-web', 'Kamal service names allow only letters, digits, - and _');
  const wf = parseStrict(file(s, '.github/workflows/vmkit-deploy.yml')) as { jobs: { deploy: { steps: { name: string; env?: Record<string, string> }[] } } };
  const deployStep = wf.jobs.deploy.steps.find((x) => x.name === 'Deploy with Kamal');
  t.equal(deployStep?.env?.KAMAL_REGISTRY_PASSWORD, '${{ secrets.GITHUB_TOKEN }}');
  t.notOk(s.secrets.some((x) => /REGISTRY/.test(x.name)), 'no registry secret to add');
});

t.test('the servers and the app host are filled at deploy time, never committed', async (t) => {
  const s = generate();
  const base = parseStrict(file(s, 'config/deploy.yml'));
  t.notOk('servers' in base);
  t.notOk('host' in (base.proxy as object));
  const staging = file(s, 'config/deploy.staging.yml');
  t.match(staging, /<%= ENV\.fetch\("VMKIT_HOST"\) %>/);
  t.match(staging, /<%= ENV\.fetch\("VMKIT_APP_HOST"\) %>/);
  t.notMatch(staging, /\d+\.\d+\.\d+\.\d+/, 'no address in the file');
});

t.test('Kamal renders the destination file with the host it is given', { skip: prerequisite(rubyMissing()) }, async (t) => {
  const s = generate();
  // Kamal runs ERB, then YAML: do the same with Ruby's own ERB and Psych.
  const script = 'require "erb"; require "yaml"; require "json"; puts JSON.generate(YAML.safe_load(ERB.new(STDIN.read, trim_mode: "-").result))';
  const child = execFile('ruby', ['-e', script], { env: { PATH: process.env.PATH, VMKIT_HOST: '203.0.113.7', VMKIT_APP_HOST: 'shop-staging.apps.example.com' } });
  child.stdin?.end(file(s, 'config/deploy.staging.yml'));
  let out = '';
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  t.equal(code, 0);
  t.same(JSON.parse(out), { servers: ['203.0.113.7'], proxy: { host: 'shop-staging.apps.example.com', ssl: true } });
});

function rubyMissing(): string | false {
  try {
    readFileSync('/usr/bin/ruby');
    return false;
  } catch {
    return 'ruby is not installed (apt-get install ruby)';
  }
}

t.test('every key in deploy.yml and each deploy.<dest>.yml is one Kamal 2 documents', async (t) => {
  for (const fixture of ['ruby-rails', 'node-express', 'python-fastapi', 'static-html', 'unknown-docs', 'elixir-phoenix', 'php-laravel']) {
    const s = generate({ scan: await scanFixture(fixture) });
    const base = parseStrict(file(s, 'config/deploy.yml'));
    t.same(undocumentedKeys(base), [], `${fixture}: config/deploy.yml`);
    for (const dest of ['staging', 'production']) {
      const d = parseStrict(file(s, `config/deploy.${dest}.yml`));
      t.same(undocumentedKeys(d), [], `${fixture}: config/deploy.${dest}.yml`);
      t.same(undocumentedKeys(deepMerge(base, d)), [], `${fixture}: merged for ${dest}`);
    }
  }
});

t.test('a key Kamal does not document is refused by the check', async (t) => {
  const config = parseStrict(file(generate(), 'config/deploy.yml'));
  t.same(undocumentedKeys({ ...config, sevice: 'typo' }), ['sevice']);
  t.same(undocumentedKeys({ ...config, proxy: { app_port: 3000, healthcheck: { path: '/up', url: '/x' } } }), ['proxy.healthcheck.url']);
  t.same(undocumentedKeys({ ...config, env: { clear: { A: '1' }, secrets: ['B'] } }), ['env.secrets']);
  t.same(undocumentedKeys({ ...config, 'x-anchors': { anything: true } }), [], 'x- extensions are ignored, as Kamal does');
});

t.test('the documented key list names the Kamal version and the files it comes from', async (t) => {
  const text = readFileSync(join(import.meta.dirname, '..', 'fixtures', 'kamal', 'documented-keys.txt'), 'utf8');
  t.match(text, /basecamp\/kamal v2\.\d+\.\d+/);
  t.match(text, /lib\/kamal\/configuration\/docs\//);
  // The workflow installs at least the release whose keys the config is checked against.
  const fixture = /basecamp\/kamal v(\d+)\.(\d+)\.\d+/.exec(text);
  t.equal(KAMAL_VERSION, `~> ${fixture?.[1] ?? '?'}.${fixture?.[2] ?? '?'}`, 'the pinned Kamal is the documented release or a later 2.x');
});

t.test('the secrets file holds only NAME=$NAME references', async (t) => {
  for (const scan of [RAILS, await scanFixture('elixir-phoenix'), await scanFixture('node-express')]) {
    const s = generate({ scan });
    const lines = file(s, '.kamal/secrets-common')
      .split('\n')
      .filter((l) => l.trim() !== '' && !l.startsWith('#'));
    t.ok(lines.length >= 2);
    for (const line of lines) t.match(line, /^([A-Z_][A-Z0-9_]*)=\$\1$/, line);
    // Every secret the config names is referenced there.
    const config = parseStrict(file(s, 'config/deploy.yml')) as { env: { secret?: string[] }; registry: { password: string[] } };
    const names = new Set(lines.map((l) => l.split('=')[0]));
    for (const n of [...(config.env.secret ?? []), ...config.registry.password]) t.ok(names.has(n), `${n} is referenced`);
  }
});

t.test('the PR body lists every secret to add, why, and which one VMKit sets', async (t) => {
  const s = generate();
  t.same(
    s.secrets.map((x) => [x.name, x.setBy]),
    [
      ['VMKIT_SSH_PRIVATE_KEY', 'vmkit'],
      ['RAILS_MASTER_KEY', 'you'],
    ],
  );
  for (const secret of s.secrets) {
    t.match(s.pr.body, `\`${secret.name}\``);
    t.match(s.pr.body, secret.purpose);
  }
  t.match(s.pr.body, /VMKit sets it when its GitHub App has the \*\*Secrets\*\*/);
  t.match(s.pr.body, /No registry secret is needed/);
});

t.test('the PR body says what each file is and explains the guesses', async (t) => {
  const s = generate({ scan: await scanFixture('node-express') });
  for (const f of s.files) t.match(s.pr.body, `\`${f.path}\``, f.path);
  t.match(s.pr.body, /\*\*Port 3000\*\* \(`proxy\.app_port`\)/);
  t.match(s.pr.body, /has no such route by default: add one, for example app\.get\('\/up'/);
  t.match(s.pr.body, /No Dockerfile found/);
  t.match(s.pr.body, /https:\/\/shop-staging\.apps\.example\.com/);
});

t.test('the app port is guessed per framework and the guess is explained in a comment', async (t) => {
  const expected: [string, number][] = [
    ['node-express', 3000],
    ['node-fastify', 3000],
    ['node-nextjs', 3000],
    ['node-astro', 4321],
    ['python-fastapi', 8000],
    ['python-django', 8000],
    ['python-flask', 8000],
    ['ruby-rails', 3000],
    ['ruby-sinatra', 4567],
    ['go-gin', 8080],
    ['go-echo', 1323],
    ['go-fiber', 3000],
    ['go-nethttp', 8080],
    ['java-spring-boot', 8080],
    ['kotlin-spring-boot', 8080],
    ['elixir-phoenix', 4000],
    ['rust-axum', 3000],
    ['rust-actix', 8080],
    ['dotnet-aspnetcore', 8080],
    ['php-laravel', 80],
    ['static-html', 80],
    ['unknown-docs', 80],
  ];
  for (const [fixture, port] of expected) {
    const s = generate({ scan: await scanFixture(fixture) });
    t.equal(s.appPort, port, fixture);
    const text = file(s, 'config/deploy.yml');
    t.equal((parseStrict(text).proxy as { app_port: number }).app_port, port, `${fixture}: app_port in deploy.yml`);
    t.match(text, /# A guess: .+\n\s+app_port:/, `${fixture}: a comment explains the guess`);
  }
});

t.test("a Rails app with Rails 8's generated Dockerfile is guessed on port 80 (Thruster)", async (t) => {
  const s = generate({ scan: { ...RAILS, dockerfile_detected: true } });
  t.equal(s.appPort, 80);
  t.notMatch(s.pr.body, /No Dockerfile found/);
  // Thruster listens on 80 and Puma on PORT: PORT=80 would put both on one port.
  t.notOk('PORT' in (parseStrict(file(s, 'config/deploy.yml')) as { env: { clear: object } }).env.clear, 'no PORT for Puma behind Thruster');
  t.equal((parseStrict(file(generate(), 'config/deploy.yml')) as { env: { clear: Record<string, string> } }).env.clear.PORT, '3000', 'PORT where the app itself listens on app_port');
});

t.test('the health check is /up, or / for static sites, and the PR body says what to add when the framework lacks it', async (t) => {
  t.equal(generate().healthcheckPath, '/up');
  t.match(generate().pr.body, /answers it out of the box \(Rails 7\.1 and later; on an older app add/);
  t.match(generate({ scan: await scanFixture('php-laravel') }).pr.body, /answers it out of the box \(Laravel 11 and later/);
  const fastapi = generate({ scan: await scanFixture('python-fastapi') });
  t.equal(fastapi.healthcheckPath, '/up');
  t.match(fastapi.pr.body, /@app\.get\("\/up"\)/);
  const site = generate({ scan: await scanFixture('static-html') });
  t.equal(site.healthcheckPath, '/');
});

t.test('ssl is on only when the environment has a single server', async (t) => {
  const one = parseStrict(file(generate(), 'config/deploy.staging.yml')) as { proxy: { ssl?: boolean }; servers: string[] };
  t.equal(one.proxy.ssl, true);
  t.equal(one.servers.length, 1);
  const two = parseStrict(file(generate({ serversPerEnvironment: 2 }), 'config/deploy.staging.yml')) as { proxy: { ssl?: boolean }; servers: string[] };
  t.notOk('ssl' in two.proxy);
  t.equal(two.servers.length, 2);
  t.match(generate({ serversPerEnvironment: 2 }).pr.body, /No HTTPS from kamal-proxy/);
});

type Workflow = {
  'run-name': string;
  on: { workflow_dispatch: { inputs: Record<string, { required: boolean; type: string }> } };
  permissions: Record<string, string>;
  concurrency: { group: string; 'cancel-in-progress': boolean };
  jobs: { deploy: { env: Record<string, string>; steps: { name: string; uses?: string; run?: string; with?: Record<string, unknown>; env?: Record<string, string> }[] } };
};
const workflow = (): Workflow => parseStrict(file(generate(), '.github/workflows/vmkit-deploy.yml')) as unknown as Workflow;
const scripts = (w: Workflow): string => w.jobs.deploy.steps.map((s) => s.run ?? '').join('\n');

t.test('the workflow is dispatched with the environment, host, sha, app host, host keys and deploy id', async (t) => {
  const w = workflow();
  t.same(Object.keys(w.on.workflow_dispatch.inputs).sort(), ['app_host', 'deploy_id', 'dest', 'host', 'host_keys', 'sha']);
  for (const i of Object.values(w.on.workflow_dispatch.inputs)) t.match(i, { required: true, type: 'string' });
  t.same(Object.keys(w.on), ['workflow_dispatch'], 'started only by VMKit, never by a push');
  const inputs = workflowInputs({ deployId: 'dep_01', dest: 'staging', host: '203.0.113.7', sha: 'a'.repeat(40), appHost: 'shop-staging.apps.example.com', hostKeys: ['ssh-ed25519 AAAAC3Nza root@vm'] });
  t.same(Object.keys(inputs).sort(), Object.keys(w.on.workflow_dispatch.inputs).sort(), 'the control plane sends exactly these inputs');
  t.equal(inputs.host_keys, 'ssh-ed25519 AAAAC3Nza', 'host key comments are dropped');
});

t.test('the run name carries the deploy id, and a dispatched run is found by it', async (t) => {
  const w = workflow();
  t.match(w['run-name'], /\$\{\{ inputs\.deploy_id \}\}/);
  const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const text = file(generate(), '.github/workflows/vmkit-deploy.yml');
  const fake = await FakeGitHub.start({
    app: { id: '77', publicKey },
    repos: [
      {
        owner: 'acme',
        name: 'shop',
        files: { [`.github/workflows/${WORKFLOW_FILE}`]: text },
        installationId: 5,
        appPermissions: { contents: 'write', workflows: 'write', pull_requests: 'write', actions: 'write', secrets: 'write', metadata: 'read' },
      },
    ],
  });
  t.teardown(() => fake.close());
  fake.writes.dispatchMode = 'no_content';
  const gh = new GitHubClient({ apiBaseUrl: fake.url, auth: { kind: 'app', appId: '77', privateKey: privateKey.export({ type: 'pkcs1', format: 'pem' }).toString() } });
  const inputs = workflowInputs({ deployId: 'dep_01jx4n9abcdefghjkmnpqrstvw', dest: 'staging', host: '203.0.113.7', sha: fake.shaOf('acme/shop'), appHost: 'shop-staging.apps.example.com', hostKeys: ['ssh-ed25519 AAAA'] });
  const found = await dispatchWorkflow(gh, { owner: 'acme', name: 'shop' }, { workflow: WORKFLOW_FILE, ref: 'main', inputs, marker: inputs.deploy_id }, { pollMs: 10 });
  t.equal(found.found_by, 'run_name');
  const runs = fake.writes.runs('acme/shop');
  t.equal(runs.length, 1);
  t.match(runs[0]?.display_title, 'dep_01jx4n9abcdefghjkmnpqrstvw');
});

t.test('the workflow checks out the sha and installs Kamal pinned to major version 2', async (t) => {
  const w = workflow();
  const checkout = w.jobs.deploy.steps.find((s) => s.uses?.startsWith('actions/checkout@'));
  t.equal(checkout?.with?.ref, '${{ inputs.sha }}');
  t.ok(w.jobs.deploy.steps.some((s) => s.uses?.startsWith('ruby/setup-ruby@')));
  t.match(scripts(w), /gem install kamal --no-document -v '~> 2\.\d+'/);
  t.match(scripts(w), /kamal deploy -d "\$DEST"/);
});

t.test("the workflow trusts only the VM's host keys from the dispatch, never ssh-keyscan", async (t) => {
  const w = workflow();
  const all = file(generate(), '.github/workflows/vmkit-deploy.yml');
  t.notMatch(all, /ssh-keyscan/);
  t.equal(w.jobs.deploy.env.HOST_KEYS, '${{ inputs.host_keys }}');
  t.match(scripts(w), /~\/\.ssh\/known_hosts/);
  t.match(scripts(w), /StrictHostKeyChecking yes/);
  const load = w.jobs.deploy.steps.find((s) => s.name === 'Load the deploy key');
  t.equal(load?.env?.VMKIT_SSH_PRIVATE_KEY, '${{ secrets.VMKIT_SSH_PRIVATE_KEY }}');
  t.match(load?.run, /ssh-agent/);
});

t.test('the known_hosts script writes the dispatched keys for the host and refuses anything else', { skip: prerequisite(bashMissing()) }, async (t) => {
  const w = workflow();
  const script = w.jobs.deploy.steps.find((s) => s.name === "Trust only the VM's SSH host keys")?.run ?? '';
  const { mkdtemp, readFile, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const home = await mkdtemp(join(tmpdir(), 'vmkit-kh-'));
  t.teardown(() => rm(home, { recursive: true, force: true }));
  const runScript = (hostKeys: string) => run('bash', ['-c', script], { env: { PATH: process.env.PATH, HOME: home, VMKIT_HOST: '203.0.113.7', HOST_KEYS: hostKeys } });
  const inputs = workflowInputs({ deployId: 'd', dest: 's', host: 'h', sha: 's', appHost: 'a', hostKeys: ['ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB root@vm', 'ecdsa-sha2-nistp256 AAAAE2VjZHNh= root@vm'] });
  await runScript(inputs.host_keys);
  t.equal(await readFile(join(home, '.ssh', 'known_hosts'), 'utf8'), '203.0.113.7 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB\n203.0.113.7 ecdsa-sha2-nistp256 AAAAE2VjZHNh=\n');
  // Every type the agent may report at enrollment is one the workflow writes.
  for (const type of SSH_HOST_KEY_TYPES) {
    await runScript(`${type} AAAAkey=`);
    t.equal(await readFile(join(home, '.ssh', 'known_hosts'), 'utf8'), `203.0.113.7 ${type} AAAAkey=\n`, type);
  }
  await t.rejects(runScript(''), 'no key: the job fails rather than trusting whatever answers');
  await t.rejects(runScript('ssh-ed25519 AAAA\n* ssh-rsa AAAA'), 'a line that is not a key fails the job');
  await t.rejects(runScript('ssh-ed25519 AAAA;touch /tmp/x'), 'a key with shell in it fails the job');
});

function bashMissing(): string | false {
  try {
    readFileSync('/bin/bash');
    return false;
  } catch {
    return 'bash is not installed';
  }
}

t.test('dispatch inputs reach the scripts only as environment variables', async (t) => {
  const w = workflow();
  for (const step of w.jobs.deploy.steps) t.notMatch(step.run ?? '', /\$\{\{/, `${step.name}: no expression pasted into the script`);
  t.match(scripts(w), /\[\[ "\$DEST" =~/);
});

t.test('two deploys to one environment never overlap: one concurrency group per environment', async (t) => {
  const w = workflow();
  t.same(w.concurrency, { group: 'vmkit-deploy-${{ inputs.dest }}', 'cancel-in-progress': false });
});

t.test('the workflow asks for the least permissions: read the code, push the image', async (t) => {
  t.same(workflow().permissions, { contents: 'read', packages: 'write' });
});

t.test('hostile repository names cannot break out of YAML', async (t) => {
  for (const name of ['a"b', "a'b", 'a: b', 'a\nb: c', '$(id)', '../x', '#x', '']) {
    t.throws(() => generate({ repo: { owner: 'acme', name } }), ApiError, JSON.stringify(name));
  }
  // Valid GitHub names that YAML or shells treat specially still come out as plain strings.
  for (const name of ['yes', 'null', '1e3', '.hidden', 'a..b', '-x', '_']) {
    const s = generate({ repo: { owner: 'acme', name } });
    const config = parseStrict(file(s, 'config/deploy.yml'));
    t.type(config.service, 'string', name);
    t.match(config.service, /^[a-z0-9_-]+$/, `${name}: a Kamal service name`);
    t.match(config.image, /^[a-z0-9]+([._-][a-z0-9]+)*\/[a-z0-9]+([._-][a-z0-9]+)*$/, `${name}: an OCI image name`);
    t.match(s.pr.body, `\`acme/${name}\``);
  }
});

t.test('hostile environment names are refused before they reach a file name or YAML', async (t) => {
  for (const env of ['Staging', 'a b', 'a/../../x', 'x\ny: 1', '$(id)', '-x', 'x-', 'a'.repeat(33), '']) {
    t.throws(() => generate({ environments: [env] }), ApiError, JSON.stringify(env));
  }
  t.throws(() => generate({ environments: [] }), ApiError, 'at least one environment');
  t.throws(() => generate({ environments: ['staging', 'staging'] }), ApiError, 'no duplicates');
  t.throws(() => generate({ zone: 'x.com\nproxy: evil' }), ApiError, 'a zone is a domain name');
  const s = generate({ environments: ['true', '123', 'null'] });
  for (const env of ['true', '123', 'null']) t.doesNotThrow(() => parseStrict(file(s, `config/deploy.${env}.yml`)));
});

t.test('an app in a subdirectory of a monorepo is built from that directory with its Dockerfile', async (t) => {
  const scan = await scanFixture('monorepo-workspaces');
  t.not(scan.root, '.', `the scan placed the app in ${String(scan.root)}`);
  const s = generate({ scan });
  const config = parseStrict(file(s, 'config/deploy.yml'));
  t.same(config.builder, { arch: 'amd64', context: scan.root, dockerfile: `${String(scan.root)}/Dockerfile` });
  t.same(undocumentedKeys(config), []);
  t.match(s.pr.body, `**The app lives in \`${String(scan.root)}/\`.**`);
  t.notMatch(s.pr.body, /Dockerfile` at the repository root/, 'not told to add a Dockerfile at the root');
});

t.test('an app directory that is not a plain relative path is not used', async (t) => {
  for (const root of ['../outside', 'apps/../..', 'apps/we b', 'a`b', '/etc']) {
    const s = generate({ scan: { ...RAILS, root } });
    t.same(parseStrict(file(s, 'config/deploy.yml')).builder, { arch: 'amd64' }, root);
    t.match(s.pr.body, /cannot be pointed at safely/, root);
  }
});

t.test('the PR body names the host each environment answers on, as VMKit registers it', async (t) => {
  const s = generate({ repo: { owner: 'acme', name: 'Shop_Web' }, zone: 'Apps.Example.com.' });
  for (const dest of ['staging', 'production']) t.match(s.pr.body, `https://${hostFor('Shop_Web', dest, 'apps.example.com')} `);
  t.match(s.pr.body, 'https://shop-web-staging.apps.example.com ');
  t.notMatch(generate({ zone: undefined }).pr.body, /Where it will answer/, 'no zone, no host names');
});

t.test('the same input always gives the same files', async (t) => {
  t.same(generate(), generate());
  t.same(parse(file(generate(), 'config/deploy.yml')), parse(file(generate(), 'config/deploy.yml')));
});
