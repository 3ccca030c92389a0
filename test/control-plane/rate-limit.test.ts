import t from 'tap';
import { setTimeout as sleep } from 'node:timers/promises';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { generateApiKeySecret } from '../../control-plane/src/auth/api-keys.ts';

t.test('rate limits', async (t) => {
  const windowMs = 3000; // long enough that a loaded machine still fits 4 requests in one window
  const cp = await startTestControlPlane({ config: { rateLimit: { max: 3, anonymousMax: 2, windowMs } } });
  t.teardown(() => cp.close());

  t.test('a key past its limit gets 429 rate_limited with Retry-After, then recovers', async (t) => {
    const { secret } = await cp.createKey(['repos:read']);
    const started = Date.now();
    for (let i = 0; i < 3; i++) t.equal((await cp.api('GET', '/api/repos', { key: secret })).status, 200, `request ${i + 1} passes`);
    const limited = await cp.api<{ error: string; message: string }>('GET', '/api/repos', { key: secret });
    t.equal(limited.status, 429);
    t.equal(limited.body.error, 'rate_limited');
    t.match(limited.body.message, /retry/i);
    const retryAfter = Number(limited.headers.get('retry-after'));
    t.ok(retryAfter >= 1 && retryAfter <= Math.ceil(windowMs / 1000), `Retry-After is ${retryAfter} s`);

    // Another key of the same workspace has its own budget.
    const other = await cp.createKey(['repos:read']);
    t.equal((await cp.api('GET', '/api/repos', { key: other.secret })).status, 200, 'another key is not limited');

    // The window started with the first request, which on a loaded machine may be
    // well after `started`: ask again until the window has passed, within a wide bound.
    await sleep(Math.max(0, started + windowMs - Date.now()));
    let status = 429;
    while (status === 429 && Date.now() < started + windowMs * 10) {
      status = (await cp.api('GET', '/api/repos', { key: secret })).status;
      if (status === 429) await sleep(200);
    }
    t.equal(status, 200, 'the key works again after the window');
  });

  t.test('requests without a valid key are limited per address, made-up keys included', async (t) => {
    await sleep(windowMs + 100);
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) {
      const spoof = { 'x-forwarded-for': `203.0.113.${i + 1}` };
      statuses.push((await cp.api('GET', '/api/repos', { key: generateApiKeySecret(), headers: spoof })).status);
    }
    t.same(statuses, [401, 401, 429], 'the third unauthenticated request from this address is limited');
    t.pass('a made-up X-Forwarded-For does not buy a new budget (no proxy is trusted by default)');
  });

  t.test('in-process requests (app.inject, as the MCP server makes them) are limited too', async (t) => {
    const { secret } = await cp.createKey(['instances:read']);
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) {
      const res = await cp.app.inject({
        method: 'GET',
        url: '/api/instances',
        headers: { authorization: `Bearer ${secret}`, 'x-vmkit-channel': 'mcp', 'x-vmkit-tool': 'list_instances' },
      });
      statuses.push(res.statusCode);
    }
    t.same(statuses, [200, 200, 200, 429]);
  });

  t.test('probing unknown routes is limited too', async (t) => {
    await sleep(windowMs + 100);
    const statuses: number[] = [];
    for (let i = 0; i < 3; i++) statuses.push((await cp.api('GET', `/nope/${i}`, { key: null })).status);
    t.same(statuses, [404, 404, 429]);
  });

  t.test('the health check is never limited', async (t) => {
    for (let i = 0; i < 5; i++) t.equal((await cp.api('GET', '/healthz', { key: null })).status, 200);
  });
});
