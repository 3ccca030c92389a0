// The sandbox's pure parts and its relay: no root needed.
import t from 'tap';
import { createServer, connect } from 'node:net';
import type { AddressInfo, Server } from 'node:net';
import { isBootConfig, overlayName } from '../../control-plane/src/providers/compute/local-boot.ts';
import { blockAt, formatIpv4, overlaps, parseCidr, parseIpv4 } from '../../control-plane/src/providers/compute/local-net.ts';
import { startRelay } from '../../control-plane/src/providers/compute/local-relay.ts';
import { LocalSandboxProvider, defaultAgentProgram, hostnameFor } from '../../control-plane/src/providers/compute/local.ts';
import { must, run } from '../../control-plane/src/providers/compute/run.ts';

const listening = (server: Server): Promise<number> =>
  new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve((server.address() as AddressInfo).port)));

t.test('the pool is carved into non-overlapping /30 links, host end .1 and guest end .2', async (t) => {
  const pool = parseCidr('10.201.0.0/16');
  t.same(pool, { base: parseIpv4('10.201.0.0'), prefix: 16 });
  t.same(blockAt(pool, 0), { index: 0, net: { base: parseIpv4('10.201.0.0'), prefix: 30 }, host: '10.201.0.1', guest: '10.201.0.2' });
  t.equal(blockAt(pool, 1)?.guest, '10.201.0.6');
  t.equal(blockAt(pool, 16383)?.host, '10.201.255.253');
  t.equal(blockAt(pool, 16384), undefined, 'past the end of the pool');
  t.equal(blockAt(parseCidr('10.0.0.0/31'), 0), undefined, 'a pool smaller than a /30 has no links');
  const a = blockAt(pool, 3);
  const b = blockAt(pool, 4);
  t.ok(a && b && !overlaps(a.net, b.net), 'neighbours do not overlap');
  t.ok(overlaps(parseCidr('10.201.0.0/16'), parseCidr('10.201.7.9/32')));
  t.notOk(overlaps(parseCidr('10.201.0.0/16'), parseCidr('10.202.0.0/16')));
  t.equal(formatIpv4(parseIpv4('192.168.1.254')), '192.168.1.254');
  t.equal(parseCidr('10.201.3.7/24').base, parseIpv4('10.201.3.0'), 'host bits are dropped');
  t.throws(() => parseIpv4('10.1.2'));
  t.throws(() => parseIpv4('10.1.2.300'));
  t.throws(() => parseCidr('10.1.2.0/33'));
  t.throws(() => parseCidr('10.1.2.0'));
});

t.test('names become DNS-safe hostnames', async (t) => {
  t.equal(hostnameFor('Web Server #1'), 'web-server-1');
  t.equal(hostnameFor('---'), 'vm');
  t.equal(hostnameFor('a'.repeat(80)).length, 63);
});

t.test('boot configs are checked before the supervisor trusts them', async (t) => {
  t.ok(isBootConfig({ version: 1, hostname: 'h', overlays: ['/etc'], root_password: 'x' }));
  t.notOk(isBootConfig(null));
  t.notOk(isBootConfig({ version: 2, hostname: 'h', overlays: [], root_password: 'x' }));
  t.notOk(isBootConfig({ version: 1, hostname: 'h', overlays: ['etc'], root_password: 'x' }), 'overlay targets are absolute');
  t.equal(overlayName('/etc'), 'etc');
  t.equal(overlayName('/var/lib'), 'var_lib');
});

t.test('the relay forwards bytes both ways and steps aside when the address is taken', async (t) => {
  const echo = createServer((s) => s.pipe(s));
  const target = await listening(echo);
  t.teardown(() => echo.close());
  const relay = await startRelay({ listen_host: '127.0.0.1', listen_port: 0, target_host: '127.0.0.1', target_port: target });
  t.ok(relay, 'listening');
  t.teardown(() => relay?.close());
  const port = (relay?.address() as AddressInfo).port;
  const reply = await new Promise<string>((resolve, reject) => {
    const c = connect({ host: '127.0.0.1', port }, () => c.write('ping through the relay'));
    c.on('data', (b: Buffer) => {
      resolve(b.toString());
      c.destroy();
    });
    c.on('error', reject);
  });
  t.equal(reply, 'ping through the relay');
  t.equal(await startRelay({ listen_host: '127.0.0.1', listen_port: port, target_host: '127.0.0.1', target_port: target }), undefined);
  // A relay whose target is gone closes the client's connection instead of hanging.
  const dead = createServer();
  const deadPort = await listening(dead);
  await new Promise((r) => dead.close(r));
  const toDead = await startRelay({ listen_host: '127.0.0.1', listen_port: 0, target_host: '127.0.0.1', target_port: deadPort });
  t.teardown(() => toDead?.close());
  const closed = await new Promise<boolean>((resolve) => {
    const c = connect({ host: '127.0.0.1', port: (toDead?.address() as AddressInfo).port });
    c.on('close', () => resolve(true));
    c.on('error', () => undefined);
    setTimeout(() => resolve(false), 5000).unref();
  });
  t.ok(closed);
});

t.test('the agent program enrolls with the token (from the environment, never argv) and pinned keys, then runs and is restarted', async (t) => {
  const p = defaultAgentProgram({ control_plane_url: 'http://127.0.0.1:8080', token: 'vmkenr_x', control_plane_keys: ['ed25519:ab:cd'] });
  t.equal(p.steps.length, 2);
  t.ok(p.restart_last);
  const [enroll, runStep] = p.steps;
  t.match(enroll?.argv.join(' '), /vmkit-agent\/src\/cli\.ts enroll --url http:\/\/127\.0\.0\.1:8080 --cp-key ed25519:ab:cd$/);
  t.notOk(enroll?.argv.some((a) => a.includes('vmkenr_x')), 'the token is not on the command line (ps shows it to every user)');
  t.equal(enroll?.env?.VMKIT_ENROLLMENT_TOKEN, 'vmkenr_x');
  t.match(runStep?.argv.at(-1), 'run');
});

t.test("the agent program enrolls with the fleet's other URLs and the provider's copy of the CA", async (t) => {
  const p = defaultAgentProgram(
    { control_plane_url: 'http://127.0.0.1:8080', token: 'vmkenr_x', more_control_plane_urls: ['https://cp-b.example.com'], ca_pem: 'PEM' },
    { caFile: '/tmp/vmk-sbx/ref/ca.pem' },
  );
  t.match(p.steps[0]?.argv.join(' '), / enroll --url http:\/\/127\.0\.0\.1:8080 --url https:\/\/cp-b\.example\.com --ca-file \/tmp\/vmk-sbx\/ref\/ca\.pem$/);
});

t.test('the provider refuses unsafe folders, pools and refs', async (t) => {
  t.throws(() => new LocalSandboxProvider({ baseDir: '/tmp/with,comma' }), /base dir/);
  t.throws(() => new LocalSandboxProvider({ baseDir: '/tmp/x', subnet: '10.0.0.0/31' }), /smaller than a \/30/);
  t.throws(() => new LocalSandboxProvider({ baseDir: '/tmp/x', overlays: ['/'] }), /overlay/);
  const p = new LocalSandboxProvider({ baseDir: '/tmp/vmk-parts-never-made' });
  t.throws(() => p.dirOf('../etc'), /not a local sandbox ref/);
  t.equal(p.netnsOf('a'), p.netnsOf('a'), 'netns names are deterministic');
  t.not(p.netnsOf('a'), new LocalSandboxProvider({ baseDir: '/tmp/other' }).netnsOf('a'), 'and differ per base dir');
  t.equal(await p.status('nothing-here'), 'missing');
  t.same(await p.list(), []);
});

t.test('commands run with argument arrays, report exit codes, and must() names the failure', async (t) => {
  const r = await run('sh', ['-c', 'cat; echo err >&2; exit 3'], { input: 'in' });
  t.same([r.code, r.stdout, r.stderr], [3, 'in', 'err\n']);
  await t.rejects(must('sh', ['-c', 'echo nope >&2; exit 1']), /sh -c .* failed \(1\): nope/);
  const slow = await run('sleep', ['5'], { timeoutMs: 100 });
  t.equal(slow.signal, 'SIGKILL', 'killed at its timeout');
  await t.rejects(run('/nonexistent/tool', []), /ENOENT/);
});
