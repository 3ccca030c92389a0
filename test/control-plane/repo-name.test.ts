import t from 'tap';
import { parseRepoFullName, repoFullNameProblem } from '@vmkit/protocol';
import { parseRepoRef } from '../../control-plane/src/providers/repo-source/ref.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';

const NAMES: [string, boolean][] = [
  ['acme/web', true],
  ['Acme-1/web.site_x', true],
  ['a/b', true],
  [`${'a'.repeat(39)}/${'r'.repeat(100)}`, true],
  ['acme-/web', false],
  ['-acme/web', false],
  ['ac--me/web', false],
  [`${'a'.repeat(40)}/web`, false],
  [`acme/${'r'.repeat(101)}`, false],
  ['acme/.', false],
  ['acme/..', false],
  ['acme/web/x', false],
  ['acme', false],
  ['acme/we b', false],
  ['ac_me/web', false],
];

t.test('connect and scan share one repo-name rule', async (t) => {
  for (const [name, ok] of NAMES) {
    t.equal(parseRepoFullName(name) !== null, ok, `${name}: ${ok ? 'accepted' : 'refused'} by the rule`);
    t.equal(parseRepoRef(name) !== null, ok, `${name}: the scan's parser agrees`);
  }
  t.match(repoFullNameProblem('acme-/web'), /owner/, 'the problem names the owner');
});

t.test('acme-/web is refused at connect with a 400 naming body.repo, and nothing is connected', async (t) => {
  const cp = await startTestControlPlane();
  t.teardown(() => cp.close());
  for (const [name, ok] of NAMES) {
    const res = await cp.api<{ error?: string; message?: string; owner?: string; name?: string }>('POST', '/api/repos', { body: { repo: name } });
    if (ok) {
      t.equal(res.status, 201, `${name}: connected`);
    } else {
      t.equal(res.status, 400, `${name}: 400`);
      t.equal(res.body.error, 'invalid_request', `${name}: invalid_request`);
      t.match(res.body.message, /body\.repo/, `${name}: the message names body.repo`);
    }
  }
  const list = await cp.api<{ items: unknown[] }>('GET', '/api/repos');
  t.equal(list.body.items.length, NAMES.filter(([, ok]) => ok).length, 'only the valid names were connected');
  const scan = await cp.api<{ error?: string; message?: string }>('POST', '/api/scans', { body: { repo: 'acme-/web' } });
  t.same([scan.status, scan.body.error], [400, 'invalid_request'], 'a scan of acme-/web is refused the same way');
});
