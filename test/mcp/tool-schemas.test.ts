/**
 * The tool schemas tools/list shows are portable JSON Schema (what the MCP Inspector's
 * `--strict` check asks for): a nullable field is an `anyOf` with a `null` branch, never
 * `"type": ["string", "null"]`, and no object carries an empty `additionalProperties: {}`.
 * Checked on a real control plane through the SDK's MCP client over Streamable HTTP, and
 * the schemas still accept the tools' real answers and mean what zod's own output meant.
 */
import t from 'tap';
import type { Test } from 'tap';
import { z } from 'zod';
import { AjvJsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/ajv';
import type { Tool } from '@modelcontextprotocol/sdk/types.js';
import { portableSchema } from '../../control-plane/src/mcp/tool-schemas.ts';
import type { JsonSchema } from '../../control-plane/src/mcp/tool-schemas.ts';
import { TOOLS } from '../../control-plane/src/mcp/tools/index.ts';
import { LocalRepoSource } from '../../control-plane/src/providers/repo-source/local.ts';
import { ScanService } from '../../control-plane/src/services/scan/service.ts';
import { DEST, FULL, deployRig } from '../helpers/deploy-rig.ts';
import { uniqueInstanceName } from '../helpers/control-plane.ts';
import { connectMcp, textOf } from '../helpers/mcp-client.ts';
import { commitFixture, tempReposDir } from '../scan/fixture-repos.ts';

const ajv = new AjvJsonSchemaValidator();

/** Every place in a schema where `type` is a list or `additionalProperties` is `{}`, as JSON paths. */
function unportable(schema: unknown, path = '$'): string[] {
  if (Array.isArray(schema)) return schema.flatMap((s, i) => unportable(s, `${path}[${i}]`));
  if (typeof schema !== 'object' || schema === null) return [];
  const found: string[] = [];
  const s = schema as JsonSchema;
  if (Array.isArray(s.type)) found.push(`${path}.type = ${JSON.stringify(s.type)}`);
  const extra = s.additionalProperties;
  if (typeof extra === 'object' && extra !== null && Object.keys(extra).length === 0) found.push(`${path}.additionalProperties = {}`);
  for (const [k, v] of Object.entries(s)) {
    // Values, not subschemas: a default or an enum may hold anything.
    if (k === 'enum' || k === 'const' || k === 'default' || k === 'examples') continue;
    found.push(...unportable(v, `${path}.${k}`));
  }
  return found;
}

function accepts(schema: JsonSchema, value: unknown): { valid: boolean; errorMessage?: string } {
  return ajv.getValidator(schema)(value);
}

// ---- the rewrite on its own --------------------------------------------------------------

t.test('a type list becomes an anyOf per type, constraints inside and annotations outside', async (t) => {
  const input = { description: 'd', default: null, type: ['string', 'null'], minLength: 2 };
  t.same(portableSchema(input), { description: 'd', default: null, anyOf: [{ type: 'string', minLength: 2 }, { type: 'null' }] });
  t.same(input.type, ['string', 'null'], 'the input is left as it was');
  t.same(portableSchema({ type: ['number'] }), { type: 'number' }, 'a list of one is that type');
});

t.test('an empty additionalProperties goes; false and a real schema stay', async (t) => {
  t.same(portableSchema({ type: 'object', properties: {}, additionalProperties: {} }), { type: 'object', properties: {} });
  t.same(portableSchema({ type: 'object', additionalProperties: false }), { type: 'object', additionalProperties: false });
  t.same(
    portableSchema({ type: 'object', additionalProperties: { type: ['integer', 'null'] } }),
    { type: 'object', additionalProperties: { anyOf: [{ type: 'integer' }, { type: 'null' }] } },
    'the schema of further properties is rewritten too',
  );
});

t.test('the rewrite reaches every subschema and leaves data keywords alone', async (t) => {
  const deep = {
    type: 'object',
    default: { additionalProperties: {}, type: ['a', 'null'] },
    properties: {
      list: { type: 'array', items: { type: 'object', additionalProperties: {}, properties: { x: { type: ['boolean', 'null'] } } } },
      either: { anyOf: [{ type: 'object', additionalProperties: {} }, { type: 'null' }] },
      map: { type: 'object', propertyNames: { type: 'string' }, additionalProperties: {} },
    },
    $defs: { d: { type: ['string', 'null'] } },
  };
  const out = portableSchema(deep);
  t.same(unportable({ ...out, default: undefined }), [], 'nothing unportable is left');
  t.same(out.default, deep.default, 'a default value is data, not a schema');
});

t.test('zod nullables and loose objects come out portable and mean the same', async (t) => {
  const schema = z.looseObject({
    a: z.string().nullable(),
    b: z.number().min(1).nullable().optional(),
    c: z.array(z.looseObject({ k: z.boolean().nullable() })),
    d: z.record(z.string(), z.unknown()).nullable(),
  });
  const zodJson = z.toJSONSchema(schema, { target: 'draft-7', io: 'output' }) as JsonSchema;
  t.not(unportable(zodJson).length, 0, "zod's own output has the shapes the strict check flags");
  const portable = portableSchema(zodJson);
  t.same(unportable(portable), []);
  const corpus: unknown[] = [
    { a: null, c: [] },
    { a: 'x', b: 2, c: [{ k: null, extra: 1 }], d: { any: ['thing'] }, more: true },
    { a: 'x', b: 0, c: [] },
    { a: 'x', b: null, c: [{ k: 'no' }] },
    { a: 1, c: [] },
    { c: [] },
    { a: null, c: [], d: 'no' },
    { a: null, c: [null] },
  ];
  for (const value of corpus) {
    t.equal(accepts(portable, value).valid, accepts(zodJson, value).valid, JSON.stringify(value));
    t.equal(accepts(portable, value).valid, schema.safeParse(value).success, `zod agrees: ${JSON.stringify(value)}`);
  }
});

// ---- on a real control plane, through the SDK's client ---------------------------------

const rig = await deployRig(t);
const repos = await tempReposDir();
t.teardown(repos.cleanup);
await commitFixture(repos.dir, 'python-fastapi', 'badri', 'my-fastapi-app');
rig.cp.ctx.scanService = new ScanService({ db: rig.cp.ctx.db, sourceFor: () => new LocalRepoSource({ reposDir: repos.dir }), now: rig.cp.ctx.now });
await rig.cp.api('POST', '/api/repos', { body: { repo: 'badri/my-fastapi-app' } });

const client = await connectMcp(`${rig.cp.url}/mcp`, rig.cp.adminKey);
t.teardown(() => client.close());
const { tools } = await client.listTools();
const byName = new Map<string, Tool>(tools.map((tool) => [tool.name, tool]));

t.test('tools/list shows every tool with portable input and output schemas', async (t) => {
  t.same([...byName.keys()].sort(), TOOLS.map((x) => x.name).sort(), 'every tool is listed');
  for (const tool of tools) {
    t.same(unportable(tool.inputSchema), [], `${tool.name} inputSchema`);
    t.ok(tool.outputSchema, `${tool.name} has an output schema`);
    t.same(unportable(tool.outputSchema), [], `${tool.name} outputSchema`);
    t.equal(tool.annotations?.title, tool.title, `${tool.name} keeps its annotations`);
  }
  const scan = byName.get('scan_repo')?.outputSchema as JsonSchema;
  t.same(
    (scan.properties as Record<string, JsonSchema>).framework,
    { description: 'Detected framework (e.g. "fastapi", "nextjs", "rails")', anyOf: [{ type: 'string' }, { type: 'null' }] },
    'framework: string | null, as the contract says',
  );
  t.same(scan.required, ['language', 'framework', 'buildpack', 'procfile_detected', 'dockerfile_detected', 'scan_id'], 'the contract fields stay required');
  const deploy = byName.get('deploy')?.outputSchema as JsonSchema;
  t.same(deploy.required, ['status', 'pr_url', 'app_url', 'run_url', 'instance_id', 'deploy_id', 'message']);
  t.same((deploy.properties as Record<string, JsonSchema>).status, {
    type: 'string',
    enum: ['scaffolding_pr_open', 'succeeded', 'failed', 'running'],
    description: 'Outcome of the call.',
  });
  t.same(byName.get('harden_vm')?.inputSchema.required, ['instance_id'], 'harden_vm still takes instance_id');
});

t.test("tools/list shows zod's draft-07 schema of each tool, in the portable spelling", async (t) => {
  for (const spec of TOOLS) {
    const listed = byName.get(spec.name);
    const sdkIn = z.toJSONSchema(spec.inputSchema, { target: 'draft-7', io: 'input' }) as JsonSchema;
    const sdkOut = z.toJSONSchema(spec.outputSchema, { target: 'draft-7', io: 'output' }) as JsonSchema;
    t.same(listed?.inputSchema, portableSchema(sdkIn), `${spec.name} input`);
    t.same(listed?.outputSchema, portableSchema(sdkOut), `${spec.name} output`);
  }
});

/** Calls a tool and checks its structured answer against the output schema tools/list showed. */
async function answerOf(t: Test, name: string, args: Record<string, unknown>): Promise<Record<string, unknown>> {
  const res = await client.callTool({ name, arguments: args });
  t.notOk(res.isError, `${name} answers${res.isError ? `: ${textOf(res)}` : ''}`);
  const out = res.structuredContent as Record<string, unknown>;
  const check = accepts(byName.get(name)?.outputSchema as JsonSchema, out);
  t.ok(check.valid, `${name}'s answer fits its listed schema ${check.errorMessage ?? ''}`);
  return out;
}

t.test("the listed output schemas accept the tools' real answers", async (t) => {
  const scan = await answerOf(t, 'scan_repo', { repo: 'badri/my-fastapi-app' });
  t.match(scan, { language: 'python', framework: 'fastapi' });

  const made = await rig.cp.api<{ id: string }>('POST', '/api/instances', { body: { name: uniqueInstanceName('schemas'), provider: 'manual' } });
  const listed = await answerOf(t, 'list_instances', {});
  t.ok((listed.instances as { id: string }[]).some((i) => i.id === made.body.id), 'the instance is listed');
  const one = await answerOf(t, 'get_instance', { instance_id: made.body.id });
  t.equal(one.agent, null, 'a null agent fits the nullable object');

  const pr = await answerOf(t, 'deploy', { repo: FULL, dest: DEST });
  t.match(pr, { status: 'scaffolding_pr_open', app_url: null, run_url: null, instance_id: null, deploy_id: null });
  rig.fake.writes.closePull(FULL, 1);
  const failed = await answerOf(t, 'deploy', { repo: FULL, dest: DEST });
  t.match(failed, { status: 'failed', failed_step: 'scaffolding', error: { error: 'scaffolding_pr_closed' } });
  t.ok(Array.isArray(failed.steps), 'with its steps');
  const polled = await answerOf(t, 'get_deploy', { deploy_id: String(failed.deploy_id) });
  t.match(polled, { status: 'failed', deploy_id: failed.deploy_id });
});

t.test('the listed schemas still refuse what the contract does not allow', async (t) => {
  const scanOut = byName.get('scan_repo')?.outputSchema as JsonSchema;
  const base = { language: 'python', framework: null, buildpack: 'b', procfile_detected: true, dockerfile_detected: false, scan_id: 'sc_1' };
  t.ok(accepts(scanOut, base).valid, 'framework may be null');
  t.notOk(accepts(scanOut, { ...base, framework: 3 }).valid, 'but not a number');
  t.notOk(accepts(scanOut, { ...base, language: null }).valid, 'language may not be null');
  const deployOut = byName.get('deploy')?.outputSchema as JsonSchema;
  t.notOk(accepts(deployOut, { status: 'succeeded', message: 'm' }).valid, 'the contract fields are required');
  t.notOk(accepts(byName.get('get_instance')?.inputSchema as JsonSchema, { instance_id: '' }).valid, 'an empty id is refused');
});
