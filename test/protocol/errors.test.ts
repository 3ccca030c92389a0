import t from 'tap';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import {
  ERRORS,
  PARSE_ERROR_KINDS,
  PROTOCOL_VERSION,
  REFUSAL_REASONS,
  encodeMessage,
  errorBody,
  errorBodySchema,
  errorKeySchema,
  errorStatus,
  isErrorKey,
  parseMessage,
} from '@vmkit/protocol';

t.test('the contract error keys are in the registry with their statuses', async (t) => {
  t.equal(errorStatus('repo_not_found'), 404);
  t.equal(errorStatus('environment_not_found'), 404);
  t.equal(errorStatus('vm_not_provisioned'), 404);
  t.equal(errorStatus('compute_target_missing'), 409);
  t.equal(errorStatus('github_app_not_installed'), 422);
  t.equal(errorStatus('unauthorized'), 401);
  t.equal(errorStatus('forbidden'), 403);
  t.equal(errorStatus('rate_limited'), 429);
  t.equal(errorStatus('agent_not_connected'), 409);
});

t.test('every entry has an HTTP error status and a sentence', async (t) => {
  for (const [key, spec] of Object.entries(ERRORS)) {
    t.ok(spec.status >= 400 && spec.status < 600, `${key} status`);
    t.match(spec.message, /^[A-Z].*\.$/, `${key} message is a sentence`);
    t.match(key, /^[a-z][a-z0-9_]*$/, `${key} is snake_case`);
  }
});

t.test('error bodies have exactly the two contract fields', async (t) => {
  t.same(errorBody('repo_not_found', 'No repo with id repo_abc123 found in this workspace.'), {
    error: 'repo_not_found',
    message: 'No repo with id repo_abc123 found in this workspace.',
  });
  t.same(Object.keys(errorBody('internal')), ['error', 'message']);
  t.equal(errorBody('internal').message, ERRORS.internal.message);
  t.ok(isErrorKey('vm_not_provisioned'));
  t.notOk(isErrorKey('toString'), 'inherited names are not keys');
  t.notOk(isErrorKey(3));
});

t.test('an error key is a registered one: the wire schemas refuse any other', async (t) => {
  t.same(errorKeySchema.options, Object.keys(ERRORS), 'errorKeySchema is exactly the registry');
  t.ok(errorKeySchema.safeParse('repo_not_found').success);
  t.notOk(errorKeySchema.safeParse('something_went_wrong').success, 'a plausible but unregistered key is refused');
  t.notOk(errorKeySchema.safeParse('toString').success, 'inherited names are not keys');
  const error = (key: string) => ({ protocol: PROTOCOL_VERSION, type: 'error', key, message: 'm' });
  t.ok(parseMessage(JSON.stringify(error('overloaded'))).ok, 'a registered key travels');
  const refused = parseMessage(JSON.stringify(error('something_went_wrong')));
  t.same(refused.ok ? 'parsed' : refused.error.kind, 'schema_violation', 'an unregistered key in an error message is refused');
  const result = (key: string) => ({ protocol: PROTOCOL_VERSION, type: 'result', command_id: 'cmd_01jx4n8rz3q5m7k2p0d6w9b1e0', status: 'failed', error: { key, message: 'm' }, finished_at: 1 });
  t.ok(parseMessage(JSON.stringify(result('lockout_risk'))).ok, 'a registered key in a result travels');
  t.notOk(parseMessage(JSON.stringify(result('disk_on_fire'))).ok, 'an unregistered key in a result is refused');
  t.throws(() => encodeMessage(error('something_went_wrong') as never), 'and neither side can encode one');
  t.ok(errorBodySchema.safeParse({ error: 'lockout_risk', message: 'm', detail: {} }).success, 'a REST error body may carry additions');
  t.notOk(errorBodySchema.safeParse({ error: 'http_error', message: 'm' }).success, 'but not an unregistered key');
});

t.test('every parse error kind and refusal reason, which travel as keys, is registered', async (t) => {
  for (const kind of PARSE_ERROR_KINDS) t.ok(isErrorKey(kind), `parse error kind ${kind}`);
  for (const reason of REFUSAL_REASONS) t.ok(isErrorKey(reason), `refusal reason ${reason}`);
});

/**
 * TypeScript refuses an unregistered key wherever a key is typed; this catches one
 * written where it is not (a literal JSON body, a log-and-send helper taking a string).
 */
t.test('every error key literal in the control plane and agent sources is registered', async (t) => {
  const roots = ['control-plane/src', 'vmkit-agent/src'].map((d) => join(import.meta.dirname, '..', '..', d));
  const pattern = /(?:new (?:ApiError|CommandBusError)\(|errorBody\(|#(?:refuse|invalid)\(conn, |\b(?:key|error): )'([a-z][a-z0-9_]*)'/g;
  const found = new Map<string, string>();
  for (const root of roots) {
    for (const file of readdirSync(root, { recursive: true, encoding: 'utf8' })) {
      if (!file.endsWith('.ts')) continue;
      const text = readFileSync(join(root, file), 'utf8');
      for (const m of text.matchAll(pattern)) if (m[1]) found.set(m[1], join(root, file));
    }
  }
  t.ok(found.size >= 20, `${found.size} distinct keys found in the sources`);
  for (const [key, file] of found) t.ok(isErrorKey(key), `${key} (${file}) is registered`);
});
