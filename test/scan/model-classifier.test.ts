import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { LocalRepoSource } from '../../control-plane/src/providers/repo-source/local.ts';
import { classifyRepo } from '../../control-plane/src/services/scan/classify.ts';
import { ModelClassifier, modelClassifierFromEnv } from '../../control-plane/src/services/scan/model-classifier.ts';
import { RepoView } from '../../control-plane/src/services/scan/repo-view.ts';
import { commitFixture, tempReposDir } from './fixture-repos.ts';

interface ChatRequest {
  model: string;
  messages: { role: string; content: string }[];
  response_format?: { type: string };
  temperature?: number;
}

/** Answers POST /v1/chat/completions as OpenAI's API reference documents the response object. */
const seen: { auth: string | undefined; body: ChatRequest }[] = [];
let answer: string = '{"language":"python","framework":"flask","confidence":0.8,"reason":"app.py with Flask idioms"}';
let status = 200;
const server = createServer((req, res) => {
  const chunks: Buffer[] = [];
  req.on('data', (c: Buffer) => chunks.push(c));
  req.on('end', () => {
    if (req.method !== 'POST' || req.url !== '/v1/chat/completions') {
      res.writeHead(404).end();
      return;
    }
    const body = JSON.parse(Buffer.concat(chunks).toString('utf8')) as ChatRequest;
    seen.push({ auth: req.headers.authorization, body });
    if (status !== 200) {
      res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { message: 'overloaded', type: 'server_error' } }));
      return;
    }
    res.writeHead(200, { 'content-type': 'application/json' }).end(
      JSON.stringify({
        id: 'chatcmpl-1',
        object: 'chat.completion',
        created: Math.floor(Date.now() / 1000),
        model: body.model,
        choices: [{ index: 0, message: { role: 'assistant', content: answer }, finish_reason: 'stop' }],
        usage: { prompt_tokens: 10, completion_tokens: 10, total_tokens: 20 },
      }),
    );
  });
});
await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
t.teardown(() => new Promise<void>((resolve) => server.close(() => resolve())));
const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/chat/completions`;

const repos = await tempReposDir();
t.teardown(repos.cleanup);
const sha = await commitFixture(repos.dir, 'unknown-docs', 'acme', 'notes');
const source = new LocalRepoSource({ reposDir: repos.dir });
const ref = { owner: 'acme', name: 'notes' };

t.test('the model classifier is off unless URL and model are configured', async (t) => {
  t.equal(modelClassifierFromEnv({}), null);
  t.equal(modelClassifierFromEnv({ VMKIT_CLASSIFIER_URL: url }), null);
  t.type(modelClassifierFromEnv({ VMKIT_CLASSIFIER_URL: url, VMKIT_CLASSIFIER_MODEL: 'm' }), ModelClassifier);
  t.throws(() => new ModelClassifier({ url: 'file:///etc/passwd', model: 'm' }));
});

t.test('when the rules cannot decide, the configured model is asked through the chat completions API', async (t) => {
  const model = modelClassifierFromEnv({ VMKIT_CLASSIFIER_URL: url, VMKIT_CLASSIFIER_MODEL: 'tiny-1', VMKIT_CLASSIFIER_API_KEY: 'sk-test' });
  const view = await RepoView.open(source, ref, sha);
  const c = await classifyRepo(view, { repo: 'acme/notes', fallback: model });
  const req = seen.at(-1);
  t.equal(req?.auth, 'Bearer sk-test');
  t.equal(req?.body.model, 'tiny-1');
  t.equal(req?.body.response_format?.type, 'json_object');
  t.same(req?.body.messages.map((m) => m.role), ['system', 'user']);
  t.match(req?.body.messages[1]?.content, /README\.md/, 'the model sees the root files');
  t.match(c, { language: 'python', framework: 'flask', classifier: 'model', buildpack: 'gcr.io/buildpacks/builder:v1' });
  t.equal(c.confidence, 0.6, 'capped below rule confidence');
  t.match(c.evidence[0]?.reason, /tiny-1/);
});

t.test('a model answer outside the known languages and frameworks is not trusted', async (t) => {
  answer = 'Sure! {"language":"cobol","framework":"cics","confidence":0.99,"reason":"mainframe"}';
  t.teardown(() => {
    answer = '{"language":"python","framework":"flask","confidence":0.8,"reason":"x"}';
  });
  const model = new ModelClassifier({ url, model: 'm' });
  const v = await model.classify({ repo: 'a/b', files: ['x'], manifests: [] });
  t.match(v, { language: 'unknown', framework: null });
  t.equal(seen.at(-1)?.auth, undefined, 'no key configured, no Authorization header');
});

t.test('a failing model endpoint leaves the rules answer', async (t) => {
  status = 503;
  t.teardown(() => {
    status = 200;
  });
  const model = new ModelClassifier({ url, model: 'm' });
  await t.rejects(model.classify({ repo: 'a/b', files: [], manifests: [] }), /503/);
  const view = await RepoView.open(source, ref, sha);
  const c = await classifyRepo(view, { repo: 'acme/notes', fallback: model });
  t.match(c, { language: 'unknown', classifier: 'none' });
});
