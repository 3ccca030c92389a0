/**
 * deploy benchmark (root only: it boots a local sandbox VM with a real sshd and agent).
 *
 *   node --import tsx scripts/bench/deploy.ts [--redeploys 3]
 *
 * A real control-plane process deploys `acme/shop` to `staging` with the local sandbox as
 * compute, GitHub and Cloudflare as local stand-ins (configured through the API, as an
 * operator would), the stand-in's workflow run completing by itself. First the
 * scaffolding PR (merged at once), then one deploy onto a fresh VM and `--redeploys`
 * onto the same VM. Prints each step's time (from the deploy record) and the control
 * plane's own CPU time per deploy (utime + stime of its process from /proc/<pid>/stat,
 * before and after; the sandbox, its agent and the stand-ins are other processes and
 * not counted). Figures, not assertions.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import { parseArgs } from 'node:util';
import { sandboxSkipReason } from '../../test/helpers/sandbox.ts';
import { FULL, deployProcess } from '../../test/helpers/deploy-process.ts';
import type { DeployBody, DeployProcess } from '../../test/helpers/deploy-process.ts';

const { values } = parseArgs({ options: { redeploys: { type: 'string', default: '3' } } });
const REDEPLOYS = Math.max(1, Number(values.redeploys));

if (sandboxSkipReason) {
  process.stdout.write(`deploy: skipped (${sandboxSkipReason})\n`);
  process.exit(0);
}

const STEPS = ['provisioning', 'waiting_for_agent', 'hardening', 'dns', 'dispatching', 'running_workflow'];
const TICKS_PER_SECOND = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100;

/** CPU time (ms) the process has used so far: utime + stime, fields 14 and 15 of /proc/<pid>/stat. */
function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces) start with field 3, the state.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / TICKS_PER_SECOND;
}

interface Measured {
  wallMs: number;
  cpuMs: number;
  steps: Record<string, { ms: number; state: string }>;
}

async function measuredDeploy(rig: DeployProcess): Promise<Measured> {
  const pid = rig.cp().child.pid ?? 0;
  const cpu0 = cpuMs(pid);
  const t0 = performance.now();
  const started = await rig.deploy();
  if (started.body.status !== 'running' && started.body.status !== 'succeeded') throw new Error(`deploy answered ${JSON.stringify(started.body)}`);
  const id = started.body.deploy_id ?? '';
  const done: DeployBody = await rig.until(id, (d) => d.status !== 'running', 'the deploy to end');
  const wallMs = performance.now() - t0;
  const used = cpuMs(pid) - cpu0;
  if (done.status !== 'succeeded') throw new Error(`deploy ${id} ${done.status}: ${done.error_message ?? ''}`);
  const steps: Measured['steps'] = {};
  for (const s of done.steps as Array<DeployBody['steps'][number] & { started_at: string | null; finished_at: string | null }>) {
    const ms = s.started_at && s.finished_at ? Date.parse(s.finished_at) - Date.parse(s.started_at) : 0;
    steps[s.name] = { ms, state: s.state };
  }
  return { wallMs, cpuMs: used, steps };
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  const mid = Math.floor(s.length / 2);
  return s.length % 2 ? (s[mid] ?? 0) : ((s[mid - 1] ?? 0) + (s[mid] ?? 0)) / 2;
};
const fmt = (ms: number): string => (ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`);

const cleanups: Array<() => unknown> = [];
try {
  const rig = await deployProcess({ teardown: (fn) => void cleanups.push(fn) });
  rig.github.writes.autoRun = 'success';
  const pr = await rig.deploy();
  if (pr.body.status !== 'scaffolding_pr_open') throw new Error(`first call answered ${JSON.stringify(pr.body)}`);
  rig.github.writes.mergePull(FULL, rig.github.writes.pulls(FULL)[0]?.number ?? 1);

  const load0 = loadavg()[0] ?? 0;
  const fresh = await measuredDeploy(rig);
  const again: Measured[] = [];
  for (let i = 0; i < REDEPLOYS; i++) again.push(await measuredDeploy(rig));
  const load1 = loadavg()[0] ?? 0;

  const rows = STEPS.map((name) => {
    const f = fresh.steps[name];
    const r = median(again.map((m) => m.steps[name]?.ms ?? 0));
    const rState = again[0]?.steps[name]?.state ?? '';
    return `| ${name} | ${f ? fmt(f.ms) : '-'} | ${fmt(r)}${rState === 'succeeded' ? '' : ` (${rState})`} |`;
  });
  process.stdout.write(
    [
      `machine: ${cpus().length} vCPU, ${Math.round(totalmem() / 2 ** 30)} GiB, Node ${process.version}; load average ${load0.toFixed(1)} → ${load1.toFixed(1)}`,
      '',
      `| step | fresh VM | redeploy (median of ${REDEPLOYS}) |`,
      '|---|---|---|',
      ...rows,
      `| whole deploy (POST to succeeded) | ${fmt(fresh.wallMs)} | ${fmt(median(again.map((m) => m.wallMs)))} |`,
      `| control-plane CPU per deploy | ${fmt(fresh.cpuMs)} | ${fmt(median(again.map((m) => m.cpuMs)))} |`,
      '',
      'running_workflow is the stand-in run (queued → in_progress → completed, one state per read) followed at the',
      "control plane's run poll interval (5 s), so it measures that interval, not GitHub.",
      '',
    ].join('\n'),
  );
} finally {
  for (const fn of cleanups.reverse()) await Promise.resolve(fn()).catch(() => undefined);
}
