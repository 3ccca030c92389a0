import t from 'tap';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loopbackPort } from '../../control-plane/src/providers/compute/local.ts';
import { run } from '../../control-plane/src/providers/compute/run.ts';
import { ComputeError } from '../../control-plane/src/providers/compute/types.ts';
import { sandboxProvider, sandboxSkipReason, sshBanner, startSandbox } from '../helpers/sandbox.ts';
import { prerequisite } from '../helpers/prereq.ts';

const needsSandbox = { skip: prerequisite(sandboxSkipReason) };


/** Everything the host would show of a sandbox. */
/**
 * A host link by name and kernel index: names are reused (the next sandbox, perhaps of a
 * test file running beside this one, takes the first free `vmk<n>h`), indexes are not.
 */
interface HostLink {
  name: string;
  index: number;
}

async function hostLinkOf(name: string | undefined): Promise<HostLink | undefined> {
  if (name === undefined) return undefined;
  const r = await run('ip', ['-j', 'link', 'show', 'dev', name]);
  if (r.code !== 0) return undefined;
  const [link] = JSON.parse(r.stdout) as { ifindex: number }[];
  return link === undefined ? undefined : { name, index: link.ifindex };
}

async function hostTraces(netns: string, link: HostLink | undefined, dir: string): Promise<string[]> {
  const traces: string[] = [];
  const ns = await run('ip', ['netns', 'list']);
  if (ns.stdout.split('\n').some((l) => l.split(' ')[0] === netns)) traces.push(`netns ${netns}`);
  if (link !== undefined && (await hostLinkOf(link.name))?.index === link.index) traces.push(`link ${link.name}`);
  for (const line of readFileSync('/proc/mounts', 'utf8').split('\n')) {
    if (line.includes(dir) || line.includes(`/run/netns/${netns}`)) traces.push(`mount ${line}`);
  }
  const pg = spawnSync('pgrep', ['-f', dir], { encoding: 'utf8' });
  if (pg.stdout.trim() !== '') traces.push(`processes ${pg.stdout.trim().replace(/\n/g, ',')}`);
  if (existsSync(dir)) traces.push(`folder ${dir}`);
  return traces;
}

t.test('destroy removes the netns, the link, the processes, the mounts and the folder', needsSandbox, async (t) => {
  const provider = sandboxProvider(t);
  const sb = await startSandbox(t, { provider });
  const state = provider.readState(sb.vm.ref);
  t.ok(state?.host_if, 'state names the host link');
  const link = await hostLinkOf(state?.host_if);
  t.ok(link, 'the host link is there');
  t.not((await hostTraces(sb.vm.netns, link, sb.vm.dir)).length, 0, 'the sandbox is visible before');
  t.equal(await provider.status(sb.vm.ref), 'running');
  const started = Date.now();
  await sb.destroy();
  t.comment(`destroy took ${Date.now() - started} ms`);
  t.same(await hostTraces(sb.vm.netns, link, sb.vm.dir), [], 'nothing left on the host');
  const initGone = async (): Promise<boolean> => {
    for (let i = 0; i < 100; i++) {
      const st = spawnSync('ps', ['-o', 'stat=', '-p', String(state?.init_pid)], { encoding: 'utf8' }).stdout.trim();
      if (st === '' || st.startsWith('Z')) return true;
      await new Promise((r) => setTimeout(r, 20));
    }
    return false;
  };
  t.ok(state?.init_pid !== undefined && (await initGone()), 'init is gone');
  t.equal(await provider.status(sb.vm.ref), 'missing');
  await t.resolves(sb.destroy(), 'destroying again is fine');
});

t.test('destroy after the supervisor was killed still cleans up', needsSandbox, async (t) => {
  const provider = sandboxProvider(t);
  const sb = await startSandbox(t, { provider });
  const pid = provider.readState(sb.vm.ref)?.init_pid;
  const state = provider.readState(sb.vm.ref);
  const link = await hostLinkOf(state?.host_if);
  t.ok(link, 'the host link is there');
  if (pid === undefined) throw new Error('no init pid in the state file');
  process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 100 && (await provider.status(sb.vm.ref)) === 'running'; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(await provider.status(sb.vm.ref), 'stopped', 'a crashed sandbox is stopped, not running');
  // The kernel kills the rest of the pid namespace while init's threads finish exiting.
  let answering = true;
  for (let i = 0; i < 50 && answering; i++) {
    answering = await sshBanner(sb.vm.address, 22, 1000).then(
      () => true,
      () => false,
    );
    if (answering) await new Promise((r) => setTimeout(r, 100));
  }
  t.notOk(answering, 'its sshd died with it');
  await sb.destroy();
  t.same(await hostTraces(sb.vm.netns, link, sb.vm.dir), []);
  t.equal(await provider.status(sb.vm.ref), 'missing');
});

t.test('killing the host-side supervisor process takes the sandbox down and destroy cleans up', needsSandbox, async (t) => {
  const provider = sandboxProvider(t);
  const sb = await startSandbox(t, { provider });
  const state = provider.readState(sb.vm.ref);
  const link = await hostLinkOf(state?.host_if);
  t.ok(link, 'the host link is there');
  const pid = state?.supervisor_pid;
  if (pid === undefined) throw new Error('no supervisor pid in the state file');
  process.kill(pid, 'SIGKILL');
  for (let i = 0; i < 100 && (await provider.status(sb.vm.ref)) === 'running'; i++) await new Promise((r) => setTimeout(r, 20));
  t.equal(await provider.status(sb.vm.ref), 'stopped');
  await sb.destroy();
  t.same(await hostTraces(sb.vm.netns, link, sb.vm.dir), []);
});

t.test('a half-made sandbox left by a crash is found and removed by destroyStale', needsSandbox, async (t) => {
  const provider = sandboxProvider(t);
  const ref = 'half-made';
  const dir = provider.dirOf(ref);
  const netns = provider.netnsOf(ref);
  // What a crash right after `ip netns add` leaves: a folder without state, and a netns.
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'boot.json'), '{}');
  t.equal((await run('ip', ['netns', 'add', netns])).code, 0);
  t.equal(await provider.status(ref), 'stopped');
  t.same(await provider.destroyStale(), [ref]);
  t.same(await hostTraces(netns, undefined, dir), []);
  t.equal(await provider.status(ref), 'missing');
});

t.test('status tells running from missing', needsSandbox, async (t) => {
  const provider = sandboxProvider(t);
  t.equal(await provider.status('never-made'), 'missing');
  const sb = await startSandbox(t, { provider });
  t.equal(await provider.status(sb.vm.ref), 'running');
  t.same(await provider.list(), [{ ref: sb.vm.ref, status: 'running' }]);
  await sb.destroy();
  t.equal(await provider.status(sb.vm.ref), 'missing');
  const err: unknown = await provider.exec(sb.vm.ref, ['true']).catch((e: unknown) => e);
  t.equal(err instanceof ComputeError ? err.key : err, 'vm_not_provisioned', 'exec on a missing sandbox fails clearly');
});

t.test('a program given at create runs inside after sshd is up, with its env, logging to program.log', needsSandbox, async (t) => {
  const sb = await startSandbox(t, {
    name: 'prog',
    program: {
      steps: [
        { argv: ['sh', '-c', 'echo "first $GREETING $(hostname)"'], env: { GREETING: 'hello' } },
        { argv: ['sh', '-c', 'test -s /run/sshd.pid && echo "sshd up"; echo "pid $$"; exec sleep 600'] },
      ],
    },
  });
  const log = join(sb.vm.dir, 'program.log');
  let text = '';
  for (let i = 0; i < 100 && !text.includes('sshd up'); i++) {
    await new Promise((r) => setTimeout(r, 50));
    text = existsSync(log) ? readFileSync(log, 'utf8') : '';
  }
  t.match(text, /^first hello prog$/m, 'env and hostname seen by the program');
  t.match(text, /^sshd up$/m, 'started after sshd wrote its pid file');
  t.match(text, /^pid \d+$/m);
  const ps = await sb.exec(['ps', '-o', 'args=', '-e']);
  t.match(ps.stdout, /sleep 600/, 'the long-running step runs in the sandbox');
});

t.test('an agent enrollment becomes the agent program with the control plane URL seen from inside', needsSandbox, async (t) => {
  const sb = await startSandbox(t, {
    enrollment: { control_plane_url: 'http://127.0.0.1:9/', token: 'enr-secret' },
  });
  t.notOk(existsSync(join(sb.vm.dir, 'boot.json')), 'boot.json with the secrets is gone once read');
  // The agent program is started (whether the CLI exists yet or not): its log names the steps.
  let text = '';
  for (let i = 0; i < 100 && !text.includes('program step 1/2'); i++) {
    await new Promise((r) => setTimeout(r, 50));
    text = readFileSync(join(sb.vm.dir, 'supervisor.log'), 'utf8');
  }
  t.match(text, /program step 1\/2/);
});

t.test('create refuses clearly where the sandbox cannot run (not root)', { skip: prerequisite(process.getuid?.() !== 0 && 'needs root to start a child as nobody') }, async (t) => {
  const baseDir = join(tmpdir(), `vmk-unprivileged-${process.pid}`);
  t.teardown(() => rmSync(baseDir, { recursive: true, force: true }));
  // The child loads the sources as root and only then becomes nobody: the checkout
  // may be readable by root alone (cloned into /root or a 0700 directory).
  const script = [
    "import { LocalSandboxProvider } from './control-plane/src/providers/compute/local.ts';",
    'process.setgroups([]); process.setgid(65534); process.setuid(65534);',
    "console.log('uid ' + process.getuid());",
    `const p = new LocalSandboxProvider({ baseDir: ${JSON.stringify(baseDir)} });`,
    "p.create({ instance_id: 'x', name: 'x' }).then(() => console.log('created'), (e) => console.log(e.key + ': ' + e.message));",
  ].join('\n');
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: join(import.meta.dirname, '..', '..'),
    encoding: 'utf8',
    env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/tmp' },
    timeout: 60_000,
  });
  t.match(r.stdout, /^uid 65534$/m, 'the child runs as nobody when it calls create', { stderr: r.stderr });
  t.match(r.stdout, /^sandbox_unavailable: The local VM sandbox cannot run here: it needs root/m);
  t.notOk(existsSync(baseDir), 'nothing was created');
  t.ok(new ComputeError('sandbox_unavailable', 'x') instanceof Error);
});

t.test('only a loopback control-plane URL is relayed into the sandbox', async (t) => {
  t.equal(loopbackPort('http://127.0.0.1:8080'), 8080);
  t.equal(loopbackPort('http://localhost/'), 80);
  t.equal(loopbackPort('https://localhost'), 443);
  t.equal(loopbackPort('https://cp.example.com:8443'), undefined);
  t.equal(loopbackPort('http://10.0.0.5:8080'), undefined);
});

t.test('orphans inside the sandbox are reaped, not left as zombies', needsSandbox, async (t) => {
  const sb = await startSandbox(t);
  t.equal((await sb.exec(['sh', '-c', '(sleep 0.1 &); exit 0'])).code, 0);
  let zombies = 'unknown';
  for (let i = 0; i < 40 && zombies !== ''; i++) {
    await new Promise((r) => setTimeout(r, 100));
    const ps = await sb.exec(['ps', '-e', '-o', 'stat=,args=']);
    zombies = ps.stdout
      .split('\n')
      .filter((l) => l.trim().startsWith('Z'))
      .join('\n');
  }
  t.equal(zombies, '', 'no zombie processes');
  t.match((await sb.exec(['ps', '-o', 'args=', '-p', '1'])).stdout, /vmkit-init/, 'PID 1 is the reaper');
});

t.test("a running sandbox whose creator died is told apart from one still in use", needsSandbox, async (t) => {
  const provider = sandboxProvider(t);
  const sb = await startSandbox(t, { provider });
  t.equal(provider.readState(sb.vm.ref)?.owner_pid, process.pid, 'the creator is recorded');
  t.notOk(provider.ownerGone(sb.vm.ref), 'this test process still owns it');
  const file = join(sb.vm.dir, 'state.json');
  const state = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  writeFileSync(file, JSON.stringify({ ...state, owner_start: 'not-the-same-process' }));
  t.ok(provider.ownerGone(sb.vm.ref), 'a different process under the same pid is not the owner');
  t.equal(await provider.status(sb.vm.ref), 'running', 'it still runs until someone destroys it');
});
