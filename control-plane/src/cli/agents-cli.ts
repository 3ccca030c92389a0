import { escapeUnsafeText } from '@vmkit/protocol';
import { resolveInstance } from './instances-cli.ts';
import type { Command, CommandIo } from './instances-cli.ts';
import { table } from './output.ts';
import { UsageError } from './rest-client.ts';

type Row = Record<string, unknown>;
const s = (v: unknown): string => (v === null || v === undefined ? '' : typeof v === 'string' ? v : JSON.stringify(v));
const p = (v: unknown): string => escapeUnsafeText(s(v));
type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;

/** Longest single long-poll; the server answers sooner on any change. */
const POLL_WAIT_MS = 20_000;
const UPDATE_USAGE = 'agents update --version V (--instances ID|NAME,... | --percent N) --batch-size N --max-failures N [--allow-downgrade] [--wait]';

function count(values: Values, flag: string): number | undefined {
  const v = values[flag];
  if (v === undefined) return undefined;
  if (typeof v !== 'string' || !/^\d{1,6}$/.test(v)) throw new UsageError(`--${flag} must be a whole number (${UPDATE_USAGE})`);
  return Number(v);
}

function agentRows(r: Row): Row[] {
  return (r.agents as Row[] | undefined) ?? [];
}

function agentTable(r: Row): string {
  return table(
    ['INSTANCE', 'NAME', 'BATCH', 'STATE', 'FROM', 'TO', 'ERROR', 'STARTED', 'FINISHED'],
    agentRows(r).map((a) => [
      s(a.instance_id),
      s(a.instance_name),
      s(a.batch),
      s(a.state),
      s(a.from_version),
      s(a.to_version),
      a.error_key ? `${s(a.error_key)}: ${s(a.error_message)}` : '',
      s(a.started_at),
      s(a.finished_at),
    ]),
  );
}

function countsText(counts: unknown): string {
  return Object.entries((counts as Record<string, number> | undefined) ?? {})
    .map(([state, n]) => `${n} ${state}`)
    .join(', ');
}

function summary(r: Row): string {
  const head = `Rollout ${p(r.id)} to ${p(r.version)}: ${p(r.status)} (${p(countsText(r.counts))}; batch size ${p(r.batch_size)}, max failures ${p(r.max_failures)}).\n`;
  return r.error_message ? `${head}${p(r.error_message)}\n` : head;
}

/** `12:03:04Z  web-1 (inst_…)  succeeded  0.1.0 → 0.1.1`: one line per agent whose state changed. */
function changeLine(a: Row): string {
  const at = s(a.finished_at ?? a.started_at);
  const time = at ? `${at.slice(11, 19)}Z` : '         ';
  const versions = a.to_version ? `  ${p(a.from_version)} -> ${p(a.to_version)}` : '';
  const why = a.error_key ? `  ${p(a.error_key)}: ${p(a.error_message)}` : '';
  return `${time}  ${p(a.instance_name ?? a.instance_id)} (${p(a.instance_id)})  ${p(a.state)}${versions}${why}\n`;
}

/** Long-polls the rollout, printing each agent's state changes, until it ends. */
async function follow(io: CommandIo, first: Row): Promise<Row> {
  const seen = new Map<string, string>();
  let r = first;
  for (;;) {
    for (const a of agentRows(r)) {
      const key = s(a.instance_id);
      if (seen.get(key) !== s(a.state)) {
        seen.set(key, s(a.state));
        if (a.state !== 'pending') io.note(changeLine(a));
      }
    }
    if (r.status !== 'running') return r;
    const q = new URLSearchParams({ wait_ms: String(POLL_WAIT_MS), after: s(r.updated_at) });
    r = (await io.client.request('GET', `/api/agents/updates/${encodeURIComponent(s(r.id))}?${q.toString()}`, undefined, POLL_WAIT_MS + 30_000)) as Row;
  }
}

/** What a finished (or followed) rollout exits with: 0 when every agent was updated. */
function exitOf(r: Row): number {
  return r.status === 'running' || r.status === 'succeeded' ? 0 : 1;
}

const update: Command['run'] = async (args, io, values) => {
  if (args.length > 0) throw new UsageError(`expected ${UPDATE_USAGE}`);
  const version = values.version;
  if (typeof version !== 'string') throw new UsageError(`--version is required (${UPDATE_USAGE})`);
  const percent = count(values, 'percent');
  const instances = typeof values.instances === 'string' ? values.instances.split(',').map((x) => x.trim()).filter(Boolean) : undefined;
  if ((instances === undefined) === (percent === undefined)) throw new UsageError(`give one of --instances or --percent (${UPDATE_USAGE})`);
  const batchSize = count(values, 'batch-size');
  const maxFailures = count(values, 'max-failures');
  if (batchSize === undefined || maxFailures === undefined) throw new UsageError(`--batch-size and --max-failures are required (${UPDATE_USAGE})`);
  const ids = instances === undefined ? undefined : await Promise.all(instances.map((i) => resolveInstance(io.client, i)));
  const started = (await io.client.request('POST', '/api/agents/updates', {
    version,
    ...(ids === undefined ? { percent } : { instance_ids: ids }),
    batch_size: batchSize,
    max_failures: maxFailures,
    ...(values['allow-downgrade'] === true && { allow_downgrade: true }),
  })) as Row;
  if (values.wait !== true) {
    io.out(started, () => `${summary(started)}${agentTable(started)}Follow it: vmkit agents updates ${p(started.id)} --wait\n`);
    return 0;
  }
  io.note(`Rollout ${p(started.id)} of ${agentRows(started).length} agent(s) to ${p(started.version)}:\n`);
  const done = await follow(io, started);
  io.out(done, () => summary(done) + agentTable(done));
  return exitOf(done);
};

const updates: Command['run'] = async (args, io, values) => {
  if (args.length > 1) throw new UsageError('expected agents updates [ROLLOUT_ID] [--wait]');
  const [id] = args;
  if (id === undefined) {
    if (values.wait === true) throw new UsageError('--wait needs a ROLLOUT_ID');
    const body = (await io.client.request('GET', '/api/agents/updates')) as { items?: Row[] };
    io.out(body, () =>
      table(
        ['ID', 'STATUS', 'VERSION', 'AGENTS', 'BATCH', 'MAX FAIL', 'CREATED', 'FINISHED'],
        (body.items ?? []).map((r) => [s(r.id), s(r.status), s(r.version), countsText(r.counts), s(r.batch_size), s(r.max_failures), s(r.created_at), s(r.finished_at)]),
      ),
    );
    return 0;
  }
  let r = (await io.client.request('GET', `/api/agents/updates/${encodeURIComponent(id)}`)) as Row;
  if (values.wait === true) r = await follow(io, r);
  io.out(r, () => summary(r) + agentTable(r));
  return exitOf(r);
};

export const AGENT_COMMANDS: Record<string, Command> = {
  'agents update': {
    options: {
      version: { type: 'string' },
      instances: { type: 'string' },
      percent: { type: 'string' },
      'batch-size': { type: 'string' },
      'max-failures': { type: 'string' },
      'allow-downgrade': { type: 'boolean' },
      wait: { type: 'boolean' },
    },
    run: update,
  },
  'agents updates': { options: { wait: { type: 'boolean' } }, run: updates },
};
