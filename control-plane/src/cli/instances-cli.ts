import { escapeUnsafeText } from '@vmkit/protocol';
import { UsageError } from './rest-client.ts';
import type { Client } from './rest-client.ts';
import { table } from './output.ts';

type Row = Record<string, unknown>;
const s = (v: unknown): string => (v === null || v === undefined ? '' : typeof v === 'string' ? v : JSON.stringify(v));
const p = (v: unknown): string => escapeUnsafeText(s(v));

/** What a handler gets: its own arguments, and how to answer. */
export interface CommandIo {
  client: Client;
  json: boolean;
  /** Prints `body` as JSON with --json, else `human()`. */
  out: (body: unknown, human: () => string) => void;
  /** A line of progress for people (stderr, so --json output stays one document). */
  note: (text: string) => void;
}
type Values = Record<string, string | boolean | (string | boolean)[] | undefined>;
type Handler = (args: string[], io: CommandIo, values: Values) => Promise<number>;
/** A command: its own flags (added to the global ones) and its handler. */
export interface Command {
  options?: Record<string, { type: 'string' | 'boolean' }>;
  run: Handler;
}

/** The server refused or failed the work itself (not an HTTP error): exit 1 with this text. */
export class CommandFailed extends Error {}

function one(positionals: string[], usage: string): string {
  const [only] = positionals;
  if (positionals.length !== 1 || only === undefined) throw new UsageError(`expected ${usage}`);
  return only;
}

/** An instance id, or the name of a live (not destroyed) instance of this workspace. */
export async function resolveInstance(client: Client, idOrName: string): Promise<string> {
  if (/^inst_[0-9a-z]{26}$/.test(idOrName)) return idOrName;
  const body = (await client.request('GET', '/api/instances')) as { items?: Row[] };
  const wanted = idOrName.toLowerCase();
  const hits = (body.items ?? []).filter((i) => typeof i.name === 'string' && i.name.toLowerCase() === wanted && i.status !== 'destroyed');
  const [hit] = hits;
  if (hit === undefined) throw new CommandFailed(`no instance named ${escapeUnsafeText(idOrName)} in this workspace at ${escapeUnsafeText(client.url)} (see: vmkit instances list)`);
  if (hits.length > 1) throw new CommandFailed(`${hits.length} instances are named ${escapeUnsafeText(idOrName)}: ${hits.map((h) => p(h.id)).join(', ')}; give the id`);
  return s(hit.id);
}

function instanceTable(rows: Row[]): string {
  return table(
    ['ID', 'NAME', 'STATUS', 'PROVIDER', 'SSH', 'AGENT', 'LAST SEEN', 'HARDENED'],
    rows.map((i) => {
      const ssh = i.ssh as { host: string; port: number } | null;
      const agent = i.agent as { state: string; last_seen: string | null } | null;
      return [s(i.id), s(i.name), s(i.status), s(i.provider), ssh ? `${ssh.host}:${ssh.port}` : '', agent?.state ?? 'none', agent?.last_seen ?? '', s(i.hardened_at)];
    }),
  );
}

const list: Handler = async (args, io) => {
  if (args.length) throw new UsageError('expected instances list');
  const body = await io.client.request('GET', '/api/instances');
  io.out(body, () => instanceTable((body as { items?: Row[] }).items ?? []));
  return 0;
};

const show: Handler = async (args, io) => {
  const id = await resolveInstance(io.client, one(args, 'instances show ID|NAME'));
  const body = (await io.client.request('GET', `/api/instances/${encodeURIComponent(id)}`)) as Row;
  io.out(body, () => {
    const facts = body.facts as Row | null | undefined;
    const extra = facts ? Object.entries(facts).map(([k, v]) => `${k}: ${p(v)}`).join('\n') + '\n' : '';
    return instanceTable([body]) + extra;
  });
  return 0;
};

const CREATE_USAGE = 'instances create NAME --provider local|hetzner|manual [--environment ENV_ID]';
/** The CLI asks for the choice the REST API would otherwise make silently (manual). */
const PROVIDER_CHOICES =
  '--provider is required: local (a VM sandbox on the control plane\'s machine), hetzner (a Hetzner Cloud VM), ' +
  'or manual (a machine you set up yourself and enroll with a token; what the REST API assumes when provider is left out)';
const create: Handler = async (args, io, values) => {
  const name = one(args, CREATE_USAGE);
  if (typeof values.provider !== 'string') throw new UsageError(`${PROVIDER_CHOICES}\n(${CREATE_USAGE})`);
  const body = (await io.client.request(
    'POST',
    '/api/instances',
    { name, provider: values.provider, ...(typeof values.environment === 'string' && { environment_id: values.environment }) },
    // Provisioning a VM answers once it is made.
    600_000,
  )) as Row;
  io.out(body, () => {
    const line = `Instance ${p(body.name)} is ${p(body.id)} (${p(body.provider)}, ${p(body.status)}).\n`;
    return body.status_reason ? `${line}${p(body.status_reason).replace('{id}', p(body.id))}\n` : line;
  });
  return 0;
};

const remove: Handler = async (args, io) => {
  const id = await resolveInstance(io.client, one(args, 'instances delete ID|NAME'));
  const body = (await io.client.request('DELETE', `/api/instances/${encodeURIComponent(id)}`, undefined, 600_000)) as Row;
  io.out(body, () => `Instance ${p(body.name)} (${p(body.id)}) is ${p(body.status)}.\n`);
  return 0;
};

interface Progress {
  seq: number;
  step: string;
  state: string;
  message?: string;
}
interface CommandView {
  state: string;
  progress: Progress[];
  result: Row | null;
  error: { error: string; message: string } | null;
}

/** One line per harden step as the agent reports it. */
export function stepLine(e: Progress): string {
  return `  ${p(e.step)}: ${p(e.state)}${e.message === undefined ? '' : ` (${p(e.message)})`}\n`;
}

const harden: Handler = async (args, io) => {
  const given = one(args, 'instances harden ID|NAME');
  const id = await resolveInstance(io.client, given);
  const who = given === id ? p(id) : `${p(given)} (${p(id)})`;
  // Answer at once with the command id, then follow its steps by long-polling.
  const started = (await io.client.request('POST', `/api/instances/${encodeURIComponent(id)}/harden`, { wait_ms: 0 })) as Row;
  if (started.status !== 'running') {
    io.out(started, () => `Instance ${who}: ${p(started.status)}.\n`);
    return 0;
  }
  const commandId = s(started.command_id);
  io.note(`Hardening ${who}, command ${p(commandId)}:\n`);
  let after = -1;
  for (;;) {
    const view = (await io.client.request('GET', `/api/commands/${encodeURIComponent(commandId)}?after_seq=${after}&wait_ms=25000`, undefined, 40_000)) as CommandView;
    for (const e of view.progress) {
      io.note(stepLine(e));
      after = Math.max(after, e.seq);
    }
    if (view.state === 'running' || view.state === 'pending' || view.state === 'sent') continue;
    if (view.error) throw new CommandFailed(`harden of ${who} failed: ${p(view.error.error)}: ${p(view.error.message)}`);
    const result = view.result ?? {};
    io.out(result, () => `Instance ${who}: ${p(result.status ?? view.state)}.\n`);
    return 0;
  }
};

const scan: Handler = async (args, io) => {
  const repo = one(args, 'scan OWNER/NAME');
  const body = (await io.client.request('POST', '/api/scans', { repo }, 300_000)) as Row;
  io.out(body, () => {
    const evidence = (body.evidence as { file: string; reason: string }[] | null) ?? [];
    return (
      table(
        ['REPO', 'STATUS', 'ROOT', 'LANGUAGE', 'FRAMEWORK', 'BUILDPACK', 'CONFIDENCE'],
        [[s(body.repo), s(body.status), s(body.root), s(body.language), s(body.framework), s(body.buildpack), s(body.confidence)]],
      ) + evidence.map((e) => `  ${p(e.file)}: ${p(e.reason)}\n`).join('')
    );
  });
  return 0;
};

export const INSTANCE_COMMANDS: Record<string, Command> = {
  'instances list': { run: list },
  'instances show': { run: show },
  'instances create': { options: { provider: { type: 'string' }, environment: { type: 'string' } }, run: create },
  'instances delete': { run: remove },
  'instances harden': { run: harden },
  scan: { run: scan },
};
