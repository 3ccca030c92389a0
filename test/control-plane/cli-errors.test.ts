/**
 * Every error of the `vmkit` CLI names the URL it tried: nothing listening, a server that
 * hangs up, a wrong key (401), something missing (404), a reply that is not VMKit's (a
 * proxy's page). Across the command families (the general table, instances, deploys), in
 * text and with --json.
 */
import t from 'tap';
import { createServer } from 'node:http';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import { vmkitCli } from '../helpers/vmkit-cli.ts';

const cp = await startTestControlPlane({ config: { rateLimit: { max: 1000 } } });
t.teardown(() => cp.close());
const cli = vmkitCli(t, () => ({ url: cp.url, key: cp.adminKey }));
const vmkit = (args: string[], url: string, key = cp.adminKey) => cli(args, { VMKIT_URL: url, VMKIT_API_KEY: key });

async function listen(t: { teardown(fn: () => unknown): void }, server: Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  t.teardown(() => new Promise<void>((r) => server.close(() => r())));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

/** A command of each family and the request it makes first. */
const COMMANDS: { args: string[]; method: string; path: string }[] = [
  { args: ['keys', 'list'], method: 'GET', path: '/api/keys' },
  { args: ['repos', 'add', 'badri/app'], method: 'POST', path: '/api/repos' },
  { args: ['instances', 'list'], method: 'GET', path: '/api/instances' },
  { args: ['instances', 'show', 'web-1'], method: 'GET', path: '/api/instances' },
  { args: ['scan', 'badri/app'], method: 'POST', path: '/api/scans' },
  { args: ['deploys'], method: 'GET', path: '/api/deploys' },
  { args: ['deploy', 'badri/app', 'staging'], method: 'POST', path: '/api/deploys' },
];

t.test('nothing listening: each command names the URL it tried', async (t) => {
  const probe = createServer();
  const dead = await listen({ teardown: () => undefined }, probe);
  await new Promise<void>((r) => probe.close(() => r()));
  for (const c of COMMANDS) {
    const out = await vmkit(c.args, dead);
    t.equal(out.code, 1, c.args.join(' '));
    t.equal(out.stderr, `error: cannot reach the control plane at ${dead}${c.path}: ECONNREFUSED\n`, c.args.join(' '));
  }
});

t.test('a server that hangs up: the URL and what happened', async (t) => {
  const rude = createServer((req) => req.socket.destroy());
  const url = await listen(t, rude);
  const out = await vmkit(['instances', 'list'], url);
  t.equal(out.code, 1);
  t.match(out.stderr, new RegExp(`^error: cannot reach the control plane at ${url}/api/instances: \\S+`));
});

t.test('a wrong key: 401 with the method and URL, for each command', async (t) => {
  for (const c of COMMANDS) {
    const out = await vmkit(c.args, cp.url, `vmk_${'z'.repeat(43)}`);
    t.equal(out.code, 1, c.args.join(' '));
    t.match(out.stderr, /^error: unauthorized: /, c.args.join(' '));
    t.match(out.stderr, `(${c.method} ${cp.url}${c.path} answered 401)\n`, c.args.join(' '));
  }
  const json = await vmkit(['keys', 'list', '--json'], cp.url, `vmk_${'z'.repeat(43)}`);
  t.match(JSON.parse(json.stderr), { error: 'unauthorized', url: `${cp.url}/api/keys`, status: 401 });
});

t.test('something missing: 404 with the URL; a name not found names the server', async (t) => {
  const id = 'inst_00000000000000000000000000';
  const show = await vmkit(['instances', 'show', id], cp.url);
  t.equal(show.code, 1);
  t.match(show.stderr, /^error: instance_not_found: /);
  t.match(show.stderr, `(GET ${cp.url}/api/instances/${id} answered 404)\n`);
  const harden = await vmkit(['instances', 'harden', id], cp.url);
  t.equal(harden.code, 1);
  t.match(harden.stderr, `(POST ${cp.url}/api/instances/${id}/harden answered 404)\n`);
  const status = await vmkit(['deploy', 'status', 'dep_nope', '--json'], cp.url);
  t.equal(status.code, 1);
  t.match(JSON.parse(status.stderr), { error: 'deploy_not_found', url: `${cp.url}/api/deploys/dep_nope`, status: 404 });
  const byName = await vmkit(['instances', 'delete', 'no-such-box'], cp.url);
  t.equal(byName.code, 1);
  t.equal(byName.stderr, `error: no instance named no-such-box in this workspace at ${cp.url} (see: vmkit instances list)\n`);
});

t.test("a reply that is not VMKit's: the status and the URL, not its body", async (t) => {
  const proxy = createServer((req, res) => {
    if (req.url === '/api/keys') res.writeHead(502, { 'content-type': 'text/html' }).end('<html>Bad gateway</html>');
    else res.writeHead(500, { 'content-type': 'application/json' }).end('{"oops": true}');
  });
  const url = await listen(t, proxy);
  const html = await vmkit(['keys', 'list'], url);
  t.equal(html.code, 1);
  t.equal(html.stderr, `error: invalid_response: the server answered with a body that is not JSON (GET ${url}/api/keys answered 502)\n`);
  const foreign = await vmkit(['repos', 'list'], url);
  t.equal(foreign.code, 1);
  t.equal(foreign.stderr, `error: invalid_response: the server answered without a VMKit error body (GET ${url}/api/repos answered 500)\n`);
});
