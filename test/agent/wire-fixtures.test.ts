// The shared wire corpus (test/fixtures/wire) on the agent's side: what it sends to
// enroll, which enrollment answers it accepts, and the harden results it produces.
import t from 'tap';
import type { Test } from 'tap';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { enrollRequestSchema, hardenResultSchema } from '@vmkit/protocol';
import { EnrollError, enroll } from '../../vmkit-agent/src/enroll.ts';
import { runHarden } from '../../vmkit-agent/src/executors/harden/index.ts';
import type { HardenEnv } from '../../vmkit-agent/src/executors/harden/index.ts';
import { FakeHub } from '../helpers/fake-hub.ts';
import { wireFixtures } from '../helpers/fixtures.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { cannotRunSshd, fixtureRoot, makeHostKey, makeUserKey, sshdNamespace } from './harden-fixture.ts';

async function enrollWith(t: Test, hub: FakeHub) {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-wire-enroll-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const token = `vmkenr_${Math.random().toString(36).slice(2)}`;
  hub.tokens.add(token);
  const configFile = join(dir, 'agent.json');
  const stateDir = join(dir, 'state');
  // The VM's host keys as the corpus case reports them, so the request is the corpus's own shape.
  const hostKeyDir = join(dir, 'ssh');
  mkdirSync(hostKeyDir);
  const corpusKeys = (wireFixtures('valid', 'enroll_request')[0]?.value.ssh_host_keys ?? []) as string[];
  corpusKeys.forEach((line, i) => writeFileSync(join(hostKeyDir, `ssh_host_k${i}_key.pub`), `${line}\n`));
  const result = await enroll({ urls: [hub.baseUrl], token, cpKeys: [], configFile, stateDir, insecure: false, force: false, sshHostKeyDir: hostKeyDir }).then(
    (config) => ({ config, error: undefined }),
    (error: unknown) => ({ config: undefined, error }),
  );
  return { ...result, configFile, stateDir };
}

t.test('the request the agent sends to enroll is an enroll_request the control plane parses', async (t) => {
  const hub = await FakeHub.start();
  t.teardown(() => hub.close());
  const { config, error } = await enrollWith(t, hub);
  t.equal(error, undefined, 'enrolled');
  t.equal(hub.enrollRequests.length, 1, 'one request');
  const parsed = enrollRequestSchema.safeParse(hub.enrollRequests[0]);
  t.ok(parsed.success, 'it parses with the shared schema, no field more or less');
  t.same(Object.keys(parsed.data ?? {}).sort(), Object.keys(wireFixtures('valid', 'enroll_request')[0]?.value ?? {}).sort(), 'the same fields as the corpus case');
  t.ok(config, 'a config was written');
});

t.test('every valid enroll answer in the corpus is accepted and its keys pinned as given', async (t) => {
  const hub = await FakeHub.start();
  t.teardown(() => hub.close());
  const cases = wireFixtures('valid', 'enroll_response');
  t.ok(cases.length >= 2, `${cases.length} cases`);
  for (const fx of cases) {
    hub.enrollAnswerOverride = fx.value;
    const { config, error, configFile } = await enrollWith(t, hub);
    t.equal(error, undefined, `${fx.name}: enrolled (${fx.description})`);
    const written = JSON.parse(readFileSync(configFile, 'utf8')) as Record<string, unknown>;
    t.same(
      { agent_id: written.agent_id, instance_id: written.instance_id, signing_keys: written.signing_keys, connect_url: written.connect_url },
      fx.value,
      `${fx.name}: the config holds the answer as sent`,
    );
    t.same(config?.signing_keys, fx.value.signing_keys, `${fx.name}: every announced key pinned`);
  }
});

t.test('every invalid enroll answer in the corpus is refused with one clear error and nothing is written', async (t) => {
  const hub = await FakeHub.start();
  t.teardown(() => hub.close());
  const cases = wireFixtures('invalid', 'enroll_response');
  t.ok(cases.length >= 4, `${cases.length} cases`);
  for (const fx of cases) {
    hub.enrollAnswerOverride = fx.value;
    const { error, configFile, stateDir } = await enrollWith(t, hub);
    t.type(error, EnrollError, `${fx.name}: refused (${fx.description})`);
    t.match((error as Error).message, /^the control plane answered enrollment with an unexpected body: /, `${fx.name}: says why`);
    t.notOk(existsSync(configFile), `${fx.name}: no config`);
    t.notOk(existsSync(stateDir), `${fx.name}: no state dir, no key`);
  }
});

t.test('the harden results the agent produces parse with the shared schema', { skip: prerequisite(await cannotRunSshd()) }, async (t) => {
  const keysDir = await mkdtemp(join(tmpdir(), 'vmkit-wire-harden-'));
  const ns = await sshdNamespace();
  t.teardown(async () => {
    await ns.close();
    await rm(keysDir, { recursive: true, force: true });
  });
  const hostKey = await makeHostKey(keysDir);
  const deployKey = await makeUserKey(keysDir, 'deploy');
  const fx = await fixtureRoot('debian-12');
  t.teardown(fx.cleanup);
  const env: HardenEnv = { root: fx.root, manageAccounts: false, sshdArgs: ['-h', hostKey], exec: ns.exec };
  const params = { deploy_keys: [deployKey], dry_run: false };

  // sshd -t refuses: the run fails and restores, and says so in its output.
  const refusing: HardenEnv = { ...env, exec: async (file, args, o) => (args.includes('-t') ? { code: 255, stdout: '', stderr: 'refused by the test' } : ns.exec(file, args, o)) };
  const outcomes = [
    ['dry run', await runHarden({ ...params, dry_run: true }, env)],
    ['failed check', await runHarden(params, refusing)],
    ['hardened', await runHarden(params, env)],
    ['already hardened', await runHarden(params, env)],
  ] as const;
  t.same(
    outcomes.map(([, o]) => o.output.status),
    ['hardened', 'failed', 'hardened', 'already_hardened'],
    'each run reports the status it should',
  );
  for (const [what, o] of outcomes) {
    const parsed = hardenResultSchema.safeParse(o.output);
    t.ok(parsed.success, `${what}: ${parsed.success ? 'parses' : JSON.stringify(parsed.error.issues)}`);
  }
  const failed = outcomes[1][1];
  t.ok(!failed.ok && failed.error.key === 'sshd_validation_failed', 'the failed run names its registered key');
});
