import { parseArgs } from 'node:util';
import { escapeUnsafeJson, escapeUnsafeText } from '@vmkit/protocol';
import { StepChanges, restDeployView } from '../client/deploy-view.ts';
import type { RestDeployStep, RestDeployView } from '../client/deploy-view.ts';
import { table } from './output.ts';
import type { Io } from './output.ts';
import { RequestFailed, UsageError, failureJson, failureText, makeClient, resolveKey, resolveUrl } from './rest-client.ts';
import type { Client } from './rest-client.ts';

export const DEPLOY_USAGE = `Usage:
  vmkit deploy OWNER/NAME DEST [--sha SHA] [--wait]   deploy a repo to an environment
  vmkit deploy status DEPLOY_ID [--wait]              one deploy and its steps
  vmkit deploys [OWNER/NAME [DEST]]                   recent deploys
  common: [--url URL] [--key vmk_...] [--json]

The first deploy of a repo opens a pull request adding the workflow and a starter Kamal
config: merge it, then deploy again. Without --wait, deploy prints the deploy id and how
to follow it; with --wait it prints a line per step change until the deploy ends.

Exit codes: 0 succeeded (or started, without --wait), 1 failed or an error, 2 usage,
3 a pull request must be merged first.
`;

const OPTIONS = {
  url: { type: 'string' },
  key: { type: 'string' },
  json: { type: 'boolean', default: false },
  sha: { type: 'string' },
  wait: { type: 'boolean', default: false },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

/** Longest single long-poll; the server answers sooner on any step change. */
const POLL_WAIT_MS = 20_000;
const EXIT = { ok: 0, failed: 1, usage: 2, prOpen: 3 } as const;

interface Flags {
  json: boolean;
  wait: boolean;
  sha: string | undefined;
}

const p = (v: string | number | null | undefined): string => escapeUnsafeText(v === null || v === undefined ? '' : String(v));

function parseView(body: unknown): RestDeployView {
  const view = restDeployView.safeParse(body);
  if (!view.success) throw new RequestFailed(200, 'invalid_response', 'the server answered without a deploy record');
  return view.data;
}

/** `12:03:04Z  provisioning        succeeded  12.3 s`: the server's time of the change, UTC. */
function stepRow(step: RestDeployStep): string {
  const at = (step.state === 'running' ? step.started_at : step.finished_at) ?? step.started_at;
  const time = at ? `${new Date(at).toISOString().slice(11, 19)}Z` : '         ';
  const took =
    step.started_at && step.finished_at ? `  ${((Date.parse(step.finished_at) - Date.parse(step.started_at)) / 1000).toFixed(1)} s` : '';
  const attempt = step.attempts && step.attempts > 1 ? `  (attempt ${step.attempts})` : '';
  const why = step.state === 'failed' ? `  ${step.error_key ?? ''}: ${step.error_message ?? ''}` : '';
  return `${time}  ${p(step.name).padEnd(18)} ${p(step.state)}${took}${attempt}${p(why)}\n`;
}

/** What the deploy came to, and the exit code that goes with it. */
function outcome(view: RestDeployView, io: Io, repoDest: string): number {
  const id = p(view.deploy_id);
  switch (view.status) {
    case 'scaffolding_pr_open':
      io.stdout(
        `No deploy workflow on the default branch yet: VMKit opened a pull request adding it and a starter Kamal config:\n\n` +
          `  ${p(view.pr_url)}\n\n` +
          `Add the repository secrets its description lists, merge it, then run \`vmkit deploy ${repoDest}\` again.\n`,
      );
      return EXIT.prOpen;
    case 'succeeded':
      io.stdout(`Deploy ${id} succeeded.\n  app:      ${p(view.app_url)}\n  run:      ${p(view.run_url)}\n  instance: ${p(view.instance_id)}\n`);
      return EXIT.ok;
    case 'failed': {
      const step = view.failed_step ?? view.steps?.find((s) => s.state === 'failed')?.name ?? view.current_step;
      io.stdout(`Deploy ${id} failed at step ${p(step)}: ${p(view.error_message)} (${p(view.error_key)})\n`);
      if (view.run_url) io.stdout(`  run:      ${p(view.run_url)}\n`);
      return EXIT.failed;
    }
    default:
      io.stdout(`Deploy ${id} is running (step ${p(view.current_step ?? 'starting')}).\nFollow it: vmkit deploy status ${id} --wait\n`);
      return EXIT.ok;
  }
}

/** Long-polls the deploy, printing each step change, until it is no longer running. */
async function follow(client: Client, first: RestDeployView, io: Io, json: boolean): Promise<RestDeployView> {
  const changes = new StepChanges();
  // In --json mode the live lines go to stderr, so stdout stays one JSON document.
  const live = json ? io.stderr : io.stdout;
  let view = first;
  for (;;) {
    for (const step of changes.changed(view)) live(stepRow(step));
    if (view.status !== 'running') return view;
    const query = new URLSearchParams({ wait_ms: String(POLL_WAIT_MS) });
    if (view.updated_at) query.set('after', view.updated_at);
    const path = `/api/deploys/${encodeURIComponent(view.deploy_id ?? '')}?${query.toString()}`;
    view = parseView(await client.request('GET', path, undefined, POLL_WAIT_MS + 30_000));
  }
}

async function deployCommand(client: Client, args: string[], flags: Flags, io: Io): Promise<number> {
  if (args.length !== 2) throw new UsageError('expected deploy OWNER/NAME DEST');
  const [repo = '', dest = ''] = args;
  const started = parseView(
    await client.request('POST', '/api/deploys', { repo, dest, ...(flags.sha === undefined ? {} : { sha: flags.sha }), wait_ms: 0 }),
  );
  const repoDest = `${p(repo)} ${p(dest)}`;
  if (flags.wait && started.status === 'running') {
    (flags.json ? io.stderr : io.stdout)(`Deploy ${p(started.deploy_id)} of ${p(repo)} to ${p(dest)}${started.sha ? ` at ${p(started.sha.slice(0, 12))}` : ''}\n`);
  }
  const view = flags.wait ? await follow(client, started, io, flags.json) : started;
  if (flags.json) {
    io.stdout(`${escapeUnsafeJson(JSON.stringify(view, null, 2))}\n`);
    return view.status === 'failed' ? EXIT.failed : view.status === 'scaffolding_pr_open' ? EXIT.prOpen : EXIT.ok;
  }
  return outcome(view, io, repoDest);
}

async function statusCommand(client: Client, args: string[], flags: Flags, io: Io): Promise<number> {
  if (args.length !== 1) throw new UsageError('expected deploy status DEPLOY_ID');
  const first = parseView(await client.request('GET', `/api/deploys/${encodeURIComponent(args[0] ?? '')}`));
  if (flags.wait) {
    const view = await follow(client, first, io, flags.json);
    if (flags.json) io.stdout(`${escapeUnsafeJson(JSON.stringify(view, null, 2))}\n`);
    return flags.json ? (view.status === 'failed' ? EXIT.failed : EXIT.ok) : outcome(view, io, '<repo> <dest>');
  }
  if (flags.json) {
    io.stdout(`${escapeUnsafeJson(JSON.stringify(first, null, 2))}\n`);
    return first.status === 'failed' ? EXIT.failed : EXIT.ok;
  }
  for (const step of first.steps ?? []) io.stdout(stepRow(step));
  return outcome(first, io, '<repo> <dest>');
}

async function listCommand(client: Client, args: string[], flags: Flags, io: Io): Promise<number> {
  if (args.length > 2) throw new UsageError('expected deploys [OWNER/NAME [DEST]]');
  const query = new URLSearchParams();
  if (args[0] !== undefined) query.set('repo', args[0]);
  if (args[1] !== undefined) query.set('dest', args[1]);
  const qs = query.toString();
  const body = (await client.request('GET', `/api/deploys${qs ? `?${qs}` : ''}`)) as { items?: Record<string, unknown>[] };
  if (flags.json) {
    io.stdout(`${escapeUnsafeJson(JSON.stringify(body, null, 2))}\n`);
    return EXIT.ok;
  }
  const cell = (v: unknown): string => (typeof v === 'string' ? v : v === null || v === undefined ? '' : JSON.stringify(v));
  io.stdout(
    table(
      ['ID', 'STATUS', 'STEP', 'REPO', 'DEST', 'SHA', 'CREATED', 'APP URL'],
      (body.items ?? []).map((d) => [
        cell(d.deploy_id),
        cell(d.status),
        cell(d.status === 'failed' ? (d.failed_step ?? d.current_step) : d.current_step),
        cell(d.repo ?? d.repo_id),
        cell(d.dest ?? d.environment_id),
        cell(d.sha).slice(0, 12),
        cell(d.created_at),
        cell(d.app_url ?? d.pr_url),
      ]),
    ),
  );
  return EXIT.ok;
}

/** `vmkit deploy ...` and `vmkit deploys ...`; argv starts with the command word. Returns the exit code. */
export async function runDeployCli(argv: string[], io: Io): Promise<number> {
  let values: { url?: string; key?: string; json?: boolean; sha?: string; wait?: boolean; help?: boolean };
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true }));
  } catch (err) {
    io.stderr(`${(err as Error).message}\n\n${DEPLOY_USAGE}`);
    return EXIT.usage;
  }
  if (values.help) {
    io.stdout(DEPLOY_USAGE);
    return EXIT.ok;
  }
  const [command, ...rest] = positionals;
  const flags: Flags = { json: values.json === true, wait: values.wait === true, sha: values.sha };
  try {
    const url = resolveUrl(values.url, io.env);
    const client = makeClient(url, resolveKey(values.key, io.env, url));
    if (command === 'deploys') return await listCommand(client, rest, flags, io);
    if (rest[0] === 'status') return await statusCommand(client, rest.slice(1), flags, io);
    return await deployCommand(client, rest, flags, io);
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`${err.message}\n\n${DEPLOY_USAGE}`);
      return EXIT.usage;
    }
    if (err instanceof RequestFailed) {
      io.stderr(flags.json ? `${failureJson(err)}\n` : `error: ${failureText(err)}\n`);
      return EXIT.failed;
    }
    io.stderr(`error: ${(err as Error).message}\n`);
    return EXIT.failed;
  }
}
