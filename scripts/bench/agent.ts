/**
 * Agent start-up benchmark: the single executable (npm run build:agent) next to the
 * sources under tsx (`node vmkit-agent/bin/vmkit-agent.js run`, how agents ran before).
 *
 *   node --import tsx scripts/bench/agent.ts [--runs 5] [--idle-ms 5000] [--fleet 4]
 *
 * Per form: one agent enrolled with a local control plane, then `runs` starts, each
 * timed from spawn to the agent's own `connected` log line (the hub's welcome), and its
 * RSS read from /proc after `idle-ms` of idling connected (heartbeats only). Prints the
 * artifact's size, p50 and min of the start times, p50 of the idle RSS (anonymous and
 * file-backed parts too), and for the executable one more start with its pages dropped from
 * the page cache first, as after a boot. Figures, not
 * assertions; the goals (issue 14) are start-to-connected <= 300 ms and idle RSS <= 45 MB.
 * Then the time of a fleet update over `fleet` local agents (scripts/bench/agent-fleet.ts,
 * its own process; root only; --fleet 0 leaves it out).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { agentArtifact, artifactSkipReason } from '../../test/helpers/agent-artifact.ts';
import { startTestControlPlane } from '../../test/helpers/control-plane.ts';

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '5' }, 'idle-ms': { type: 'string', default: '5000' }, fleet: { type: 'string', default: '4' } },
});
const RUNS = Number(values.runs);
const IDLE_MS = Number(values['idle-ms']);
const ROOT = join(import.meta.dirname, '..', '..');

if (artifactSkipReason) {
  process.stdout.write(`agent: skipped (${artifactSkipReason})\n`);
  process.exit(0);
}

const out = (line: string) => process.stdout.write(`${line}\n`);
const fmt = (n: number, d = 0) => n.toFixed(d);
const p50 = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)] ?? NaN;
/** VmRSS, and its two parts: anonymous (heap, stacks) and file-backed (mapped pages of the executable and libraries). */
function rssOf(pid: number): Rss {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? NaN) * 1024;
  return { rss: kb('VmRSS'), anon: kb('RssAnon'), file: kb('RssFile') };
}
interface Rss {
  rss: number;
  anon: number;
  file: number;
}
const mib = (n: number) => fmt(n / 2 ** 20, 1);

const t0 = performance.now();
const artifact = await agentArtifact();
const buildMs = performance.now() - t0;
const cp = await startTestControlPlane({ config: { agentHub: { heartbeatIntervalMs: 15_000 } } });
const dirs: string[] = [];

interface Form {
  name: string;
  argv: string[];
}

const forms: Form[] = [
  { name: 'single executable (SEA)', argv: [artifact.file] },
  { name: 'sources under tsx', argv: [process.execPath, join(ROOT, 'vmkit-agent', 'bin', 'vmkit-agent.js')] },
];

async function enrolled(form: Form): Promise<{ config: string; state: string }> {
  const inst = (await cp.api<{ id: string }>('POST', '/api/instances', { body: { name: `bench-agent-${dirs.length}-${process.pid}` } })).body;
  const tok = (await cp.api<{ token: string }>('POST', `/api/instances/${inst.id}/enrollment-token`)).body;
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-bench-agent-'));
  dirs.push(dir);
  const config = join(dir, 'agent.json');
  const state = join(dir, 'state');
  const [cmd, ...args] = form.argv;
  await new Promise<void>((resolve, reject) => {
    const c = spawn(cmd ?? '', [...args, 'enroll', '--url', cp.url, '--config', config, '--state-dir', state], { env: { ...process.env, VMKIT_ENROLLMENT_TOKEN: tok.token }, stdio: 'ignore' });
    c.once('exit', (code) => (code === 0 ? resolve() : reject(new Error(`enroll exited ${code}`))));
  });
  const cfg = JSON.parse(readFileSync(config, 'utf8')) as Record<string, unknown>;
  writeFileSync(config, JSON.stringify({ ...cfg, log_level: 'info' }), { mode: 0o600 });
  return { config, state };
}

/** One start: ms from spawn to `connected`, then RSS after IDLE_MS connected. */
async function start(form: Form, e: { config: string; state: string }): Promise<{ ms: number } & Rss> {
  const [cmd, ...args] = form.argv;
  const began = performance.now();
  const child = spawn(cmd ?? '', [...args, 'run', '--config', e.config, '--state-dir', e.state], { stdio: ['ignore', 'ignore', 'pipe'] });
  const exited = new Promise((r) => child.once('exit', r));
  let err = '';
  const ms = await new Promise<number>((resolve, reject) => {
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString('utf8');
      if (/^info connected /m.test(err)) resolve(performance.now() - began);
    });
    child.once('exit', (code) => reject(new Error(`agent exited ${code}: ${err.slice(-500)}`)));
  });
  await new Promise((r) => setTimeout(r, IDLE_MS));
  const rss = rssOf(child.pid ?? 0);
  child.kill('SIGTERM');
  await exited;
  return { ms, ...rss };
}

/** Drops a file's pages from the page cache (coreutils dd: iflag=nocache count=0 does only that). */
function dropCache(file: string): boolean {
  return spawnSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0', 'status=none'], { stdio: 'ignore' }).status === 0;
}

out(`machine: ${cpus().length} × ${cpus()[0]?.model ?? 'cpu'}, ${fmt(totalmem() / 2 ** 30)} GiB, load ${loadavg().map((l) => fmt(l, 2)).join(' ')}, ${process.version}`);
out(`artifact: ${artifact.file}`);
out(`  size ${fmt(statSync(artifact.file).size / 1e6, 1)} MB (${artifact.manifest.version}, ${artifact.manifest.platform}, Node ${artifact.manifest.node}); ${buildMs > 5_000 ? `built in ${fmt(buildMs / 1000, 1)} s` : 'from the build cache'}`);
try {
  for (const form of forms) {
    const e = await enrolled(form);
    const runs: ({ ms: number } & Rss)[] = [];
    for (let i = 0; i < RUNS; i++) runs.push(await start(form, e));
    const ms = runs.map((r) => r.ms);
    out(`${form.name}:`);
    out(`  start to connected: p50 ${fmt(p50(ms))} ms, min ${fmt(Math.min(...ms))} ms (${RUNS} starts: ${ms.map((x) => fmt(x)).join(', ')})`);
    out(
      `  idle RSS after ${IDLE_MS / 1000} s connected: p50 ${mib(p50(runs.map((r) => r.rss)))} MiB ` +
        `(anonymous ${mib(p50(runs.map((r) => r.anon)))} MiB, file-backed ${mib(p50(runs.map((r) => r.file)))} MiB)`,
    );
    if (form.argv[0] === artifact.file && dropCache(artifact.file)) {
      // The file-backed part counts the executable's pages mapped from the page cache, and how
      // many get mapped per fault depends on how those pages were cached: the build writes the
      // file in one piece (large folios), a download or a boot reads it in small ones. The same
      // start with the executable's pages dropped first is how an agent starts after a boot.
      const cold = await start(form, e);
      out(
        `  the same, executable dropped from the page cache first (as after a boot): start ${fmt(cold.ms)} ms, ` +
          `idle RSS ${mib(cold.rss)} MiB (anonymous ${mib(cold.anon)}, file-backed ${mib(cold.file)})`,
      );
    }
  }
} finally {
  await cp.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
}

if (values.fleet !== '0') {
  const fleet = spawnSync(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'agent-fleet.ts'), '--agents', values.fleet], { stdio: 'inherit', cwd: ROOT });
  if (fleet.status !== 0) process.exitCode = 1;
}
