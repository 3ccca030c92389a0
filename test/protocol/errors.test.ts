import t from 'tap';
import { ERRORS, errorBody, errorStatus, isErrorKey } from '@vmkit/protocol';

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
