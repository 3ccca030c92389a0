import t from 'tap';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { openShell } from '../helpers/shell-client.ts';
import type { OpenResult } from '../helpers/shell-client.ts';

/**
 * The `vmkit shell` WebSocket door spends the same rate-limit budget as REST: one
 * upgrade is one request, per key for a valid key, per address for anything else.
 * No agent is involved: an instance without one answers agent_not_connected (409)
 * once the request got past the limiter, and that tells the two outcomes apart.
 */

const MAX = 6;
const ANONYMOUS_MAX = 3;
const cp = await startTestControlPlane({ config: { rateLimit: { max: MAX, anonymousMax: ANONYMOUS_MAX, windowMs: 10 * 60_000 } } });
t.teardown(() => cp.close());

const inst = await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: 'limited-vm' } });
const instanceId = inst.body.id;

async function status(r: Promise<OpenResult>): Promise<{ status: number; error: string; message: string }> {
  const res = await r;
  if (!('refused' in res)) {
    res.session.ws.terminate();
    throw new Error('the shell opened');
  }
  return { status: res.refused.status, error: res.refused.body.error, message: res.refused.body.message };
}

t.test('a key over its budget is refused with 429 rate_limited, REST and the door sharing one budget', async (t) => {
  const op = await cp.createKey(['shell'], { name: 'busy operator' });
  // Half the budget on REST, the rest on the door.
  for (let i = 0; i < MAX / 2; i++) t.equal((await cp.api('GET', '/api/shell-sessions', { key: op.secret })).status, 200);
  for (let i = 0; i < MAX / 2; i++) t.match(await status(openShell(cp.url, instanceId, { key: op.secret })), { status: 409, error: 'agent_not_connected' });

  const over = await status(openShell(cp.url, instanceId, { key: op.secret }));
  t.match(over, { status: 429, error: 'rate_limited', message: /^Too many requests; retry in \d+ s\.$/ });
  // The door's refusal spent nothing REST may still have: REST is over the budget too.
  const rest = await cp.api<{ error: string }>('GET', '/api/shell-sessions', { key: op.secret });
  t.equal(rest.status, 429);
  t.equal(rest.body.error, 'rate_limited');

  const audit = await cp.api<{ items: { action: string; status: number; error_key: string | null; target_ids: Record<string, string> }[] }>(
    'GET',
    `/api/audit?action=shell.refused&key_id=${op.id}`,
  );
  t.match(audit.body.items[0], { action: 'shell.refused', status: 429, error_key: 'rate_limited', target_ids: { via: 'websocket' } });
});

t.test('the refusal carries Retry-After, as a REST 429 does', async (t) => {
  const op = await cp.createKey(['shell']);
  for (let i = 0; i < MAX; i++) await openShell(cp.url, instanceId, { key: op.secret });
  const over = await openShell(cp.url, instanceId, { key: op.secret });
  if (!('refused' in over)) throw new Error('the shell opened');
  t.equal(over.refused.status, 429);
  const after = Number(over.refused.headers['retry-after']);
  t.ok(after >= 1 && after <= 600, `Retry-After is the seconds left in the window (${String(over.refused.headers['retry-after'])})`);
  t.match(over.refused.body.message, `retry in ${after} s`);
});

t.test('unauthenticated traffic spends its address budget, not an authenticated key’s', async (t) => {
  const op = await cp.createKey(['shell'], { name: 'patient operator' });
  // Anonymous upgrades and made-up keys from this address, well past their budget.
  const anonymous: number[] = [];
  for (let i = 0; i < ANONYMOUS_MAX + 3; i++) {
    anonymous.push((await status(openShell(cp.url, instanceId, { key: i % 2 === 0 ? null : `vmk_${'x'.repeat(43)}` }))).status);
  }
  t.same(anonymous.slice(0, ANONYMOUS_MAX), Array(ANONYMOUS_MAX).fill(401), 'within the budget: 401 unauthorized');
  t.same(anonymous.slice(ANONYMOUS_MAX), [429, 429, 429], 'past it: 429 rate_limited');
  // The same address with a valid key still gets through, on the door and on REST.
  t.match(await status(openShell(cp.url, instanceId, { key: op.secret })), { status: 409, error: 'agent_not_connected' });
  t.equal((await cp.api('GET', '/api/shell-sessions', { key: op.secret })).status, 200);
});
