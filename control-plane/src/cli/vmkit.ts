import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { escapeUnsafeJson, escapeUnsafeText } from '@vmkit/protocol';
import { AGENT_COMMANDS } from './agents-cli.ts';
import { runDeployCli } from './deploy-cli.ts';
import { CommandFailed, INSTANCE_COMMANDS } from './instances-cli.ts';
import type { Command } from './instances-cli.ts';
import { runLoginCli } from './login-cli.ts';
import { runMcpCli } from './mcp-cli.ts';
import { RequestFailed, UsageError, failureJson, failureText, makeClient, resolveKey, resolveUrl } from './rest-client.ts';
import { runShellCli } from './shell-cli.ts';
import { table } from './output.ts';
import type { Io } from './output.ts';

export const VMKIT_USAGE = `Usage: vmkit <command> [--url URL] [--key vmk_... | --key-file FILE] [--json]

  login --url URL                 check a key (stdin, or asked for) and save it for URL
  logout                          forget the saved key
  keys create --name NAME --scopes s1,s2 [--expires-at ISO | --expires-in-days N]
  keys list
  keys revoke KEY_ID
  repos add OWNER/NAME
  repos list
  repos show REPO_ID
  environments create REPO_ID NAME
  environments list REPO_ID
  instances list
  instances show ID|NAME
  instances create NAME --provider local|hetzner|manual [--environment ENV_ID]
                                  local: a VM sandbox here; hetzner: a cloud VM; manual: a
                                  machine you enroll yourself (the REST API's default)
  instances delete ID|NAME        destroys the VM
  instances harden ID|NAME        prints each step as the agent reports it
  agents update --version V (--instances ID|NAME,... | --percent N) --batch-size N --max-failures N
                [--allow-downgrade] [--wait]
                                  update agents batch by batch; stops at max failures
  agents updates [ROLLOUT_ID] [--wait]   rollouts, or one rollout agent by agent
  scan OWNER/NAME                 language, framework, buildpack, with evidence
  audit list [--action A] [--key-id K] [--since ISO] [--limit N] [--cursor C]
  deploy OWNER/NAME DEST [--sha SHA] [--wait]   deploy (first call opens the scaffolding PR)
  deploy status DEPLOY_ID [--wait]
  deploys [OWNER/NAME [DEST]]
  shell INSTANCE [--user NAME] [-- COMMAND...]   a shell (or one command) on the instance
  shell-sessions list [--limit N] [--cursor C]
  ssh-keys add KEY_ID (--file PATH.pub | --public-key LINE)
  ssh-keys list KEY_ID
  ssh-keys remove KEY_ID SSH_KEY_ID
  mcp --gateway URL [--listen HOST:PORT]   serve MCP at / forwarding to a control plane

--url defaults to $VMKIT_URL, else the saved login's URL, else http://127.0.0.1:8080.
The key: --key, else $VMKIT_API_KEY, else --key-file FILE (e.g. data/admin.key on the server
machine), else the saved login when it is for that URL. Tables by default, --json for JSON.
Exit codes: 0 done, 1 the server answered with an error, could not be reached, or the
work failed (e.g. a harden step), 2 usage.
`;

const OPTIONS = {
  url: { type: 'string' },
  key: { type: 'string' },
  'key-file': { type: 'string' },
  json: { type: 'boolean', default: false },
  name: { type: 'string' },
  scopes: { type: 'string' },
  'expires-at': { type: 'string' },
  'expires-in-days': { type: 'string' },
  action: { type: 'string' },
  'key-id': { type: 'string' },
  since: { type: 'string' },
  limit: { type: 'string' },
  cursor: { type: 'string' },
  file: { type: 'string' },
  'public-key': { type: 'string' },
  help: { type: 'boolean', short: 'h', default: false },
} as const;

type Row = Record<string, unknown>;
const s = (v: unknown): string => (v === null || v === undefined ? '' : typeof v === 'string' ? v : JSON.stringify(v));
/** A server value inside a plain text line: control characters as escapes (table() escapes its own cells). */
const p = (v: unknown): string => escapeUnsafeText(s(v));
const items = (body: unknown): Row[] => ((body as { items?: Row[] }).items ?? []);

function need(positionals: string[], n: number, what: string): string[] {
  if (positionals.length !== n) throw new UsageError(`expected ${what}`);
  return positionals;
}

/** The `vmkit` operator CLI: a small REST client. Returns the exit code. */
export async function runVmkitCli(argv: string[], io: Io): Promise<number> {
  if (argv[0] === 'mcp') return runMcpCli(argv.slice(1), io);
  if (argv[0] === 'login' || argv[0] === 'logout') return runLoginCli(argv, io);
  if (argv[0] === 'deploy' || argv[0] === 'deploys') return runDeployCli(argv, io);
  if (argv[0] === 'shell') return runShellCli(argv.slice(1), io);
  // A command found in the table brings its own flags; the rest share OPTIONS.
  const handler: Command | undefined = { ...INSTANCE_COMMANDS, ...AGENT_COMMANDS }[argv[0] === 'scan' ? 'scan' : `${argv[0]} ${argv[1]}`];
  let values: { [K in keyof typeof OPTIONS]?: string | boolean } & Record<string, string | boolean | undefined>;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: argv, options: { ...OPTIONS, ...handler?.options }, allowPositionals: true, strict: true }));
  } catch (err) {
    io.stderr(`${(err as Error).message}\n\n${VMKIT_USAGE}`);
    return 2;
  }
  const [group, action, ...args] = positionals;
  if (values.help || group === undefined || group === 'help') {
    io.stdout(VMKIT_USAGE);
    return group === undefined && !values.help ? 2 : 0;
  }
  const json = values.json === true;
  const out = (body: unknown, human: () => string) =>
    io.stdout(json ? `${escapeUnsafeJson(JSON.stringify(body, null, 2))}\n` : human());
  try {
    const url = resolveUrl(values.url as string | undefined, io.env);
    const client = makeClient(url, resolveKey(values.key as string | undefined, io.env, url, values['key-file'] as string | undefined));
    if (handler) {
      return await handler.run(positionals.slice(group === 'scan' ? 1 : 2), { client, json, out, note: io.stderr }, values);
    }
    const command = `${group} ${action ?? ''}`.trim();
    switch (command) {
      case 'keys create': {
        need(args, 0, 'no arguments besides --name and --scopes');
        const name = values.name as string | undefined;
        const scopes = (values.scopes as string | undefined)?.split(',').map((x) => x.trim()).filter(Boolean);
        if (!name || !scopes?.length) throw new UsageError('keys create needs --name and --scopes');
        let expiresAt = values['expires-at'] as string | undefined;
        const days = values['expires-in-days'] as string | undefined;
        if (days !== undefined) {
          if (!/^\d{1,5}$/.test(days) || Number(days) < 1) throw new UsageError('--expires-in-days must be a whole number of days');
          expiresAt = new Date(Date.now() + Number(days) * 86_400_000).toISOString();
        }
        const body = (await client.request('POST', '/api/keys', { name, scopes, ...(expiresAt && { expires_at: expiresAt }) })) as Row;
        out(body, () =>
          [
            `Created key ${p(body.id)} (${p(body.name)}) with scopes ${p((body.scopes as string[]).join(', '))}.`,
            'The secret is shown only this once:',
            '',
            `  ${p(body.secret)}`,
            '',
          ].join('\n'),
        );
        return 0;
      }
      case 'keys list': {
        need(args, 0, 'no arguments');
        const body = await client.request('GET', '/api/keys');
        out(body, () =>
          table(
            ['ID', 'NAME', 'PREFIX', 'SCOPES', 'CREATED', 'EXPIRES', 'LAST USED', 'REVOKED'],
            items(body).map((k) => [
              s(k.id),
              s(k.name),
              s(k.prefix),
              (k.scopes as string[]).join(','),
              s(k.created_at),
              s(k.expires_at),
              s(k.last_used_at),
              s(k.revoked_at),
            ]),
          ),
        );
        return 0;
      }
      case 'keys revoke': {
        const [id] = need(args, 1, 'keys revoke KEY_ID');
        const body = (await client.request('DELETE', `/api/keys/${encodeURIComponent(id ?? '')}`)) as Row;
        out(body, () => `Revoked key ${p(body.id)} (${p(body.name)}) at ${p(body.revoked_at)}.\n`);
        return 0;
      }
      case 'repos add': {
        const [repo] = need(args, 1, 'repos add OWNER/NAME');
        const body = (await client.request('POST', '/api/repos', { repo })) as Row;
        out(body, () => `Repo ${p(body.repo)} is ${p(body.id)}.\n`);
        return 0;
      }
      case 'repos list': {
        need(args, 0, 'no arguments');
        const body = await client.request('GET', '/api/repos');
        out(body, () => table(['ID', 'REPO', 'CREATED'], items(body).map((r) => [s(r.id), s(r.repo), s(r.created_at)])));
        return 0;
      }
      case 'repos show': {
        const [id] = need(args, 1, 'repos show REPO_ID');
        const body = (await client.request('GET', `/api/repos/${encodeURIComponent(id ?? '')}`)) as Row;
        out(body, () => table(['ID', 'REPO', 'CREATED'], [[s(body.id), s(body.repo), s(body.created_at)]]));
        return 0;
      }
      case 'environments create': {
        const [repoId, name] = need(args, 2, 'environments create REPO_ID NAME');
        const body = (await client.request('POST', `/api/repos/${encodeURIComponent(repoId ?? '')}/environments`, { name })) as Row;
        out(body, () => `Environment ${p(body.name)} is ${p(body.id)}.\n`);
        return 0;
      }
      case 'environments list': {
        const [repoId] = need(args, 1, 'environments list REPO_ID');
        const body = await client.request('GET', `/api/repos/${encodeURIComponent(repoId ?? '')}/environments`);
        out(body, () => table(['ID', 'NAME', 'CREATED'], items(body).map((e) => [s(e.id), s(e.name), s(e.created_at)])));
        return 0;
      }
      case 'audit list': {
        need(args, 0, 'no arguments besides the filters');
        const query = new URLSearchParams();
        for (const [flag, param] of [
          ['action', 'action'],
          ['key-id', 'key_id'],
          ['since', 'since'],
          ['limit', 'limit'],
          ['cursor', 'cursor'],
        ] as const) {
          const v = values[flag];
          if (typeof v === 'string') query.set(param, v);
        }
        const qs = query.toString();
        const body = (await client.request('GET', `/api/audit${qs ? `?${qs}` : ''}`)) as { next_cursor: string | null };
        out(body, () => {
          const text = table(
            ['AT', 'ACTION', 'STATUS', 'ERROR', 'KEY', 'CHANNEL', 'TOOL', 'TARGETS', 'CLIENT'],
            items(body).map((a) => [
              s(a.at),
              s(a.action),
              s(a.status),
              s(a.error_key),
              s(a.key_id),
              s(a.channel),
              s(a.tool),
              a.target_ids ? Object.values(a.target_ids as Record<string, string>).join(',') : '',
              s(a.client_address),
            ]),
          );
          return body.next_cursor ? `${text}(more: --cursor ${p(body.next_cursor)})\n` : text;
        });
        return 0;
      }
      case 'ssh-keys add': {
        const [keyId] = need(args, 1, 'ssh-keys add KEY_ID (--file PATH.pub | --public-key LINE)');
        const file = values.file as string | undefined;
        let line = values['public-key'] as string | undefined;
        if ((file === undefined) === (line === undefined)) throw new UsageError('ssh-keys add needs one of --file or --public-key');
        if (file !== undefined) line = readFileSync(file, 'utf8').trim();
        const body = (await client.request('POST', `/api/keys/${encodeURIComponent(keyId ?? '')}/ssh-keys`, { public_key: line })) as Row;
        out(body, () => `Registered SSH key ${p(body.id)} (${p(body.fingerprint)}) on ${p(body.key_id)}.\n`);
        return 0;
      }
      case 'ssh-keys list': {
        const [keyId] = need(args, 1, 'ssh-keys list KEY_ID');
        const body = await client.request('GET', `/api/keys/${encodeURIComponent(keyId ?? '')}/ssh-keys`);
        out(body, () =>
          table(
            ['ID', 'TYPE', 'FINGERPRINT', 'COMMENT', 'CREATED', 'LAST USED'],
            items(body).map((k) => [s(k.id), s(k.type), s(k.fingerprint), s(k.comment), s(k.created_at), s(k.last_used_at)]),
          ),
        );
        return 0;
      }
      case 'ssh-keys remove': {
        const [keyId, sshKeyId] = need(args, 2, 'ssh-keys remove KEY_ID SSH_KEY_ID');
        const body = (await client.request(
          'DELETE',
          `/api/keys/${encodeURIComponent(keyId ?? '')}/ssh-keys/${encodeURIComponent(sshKeyId ?? '')}`,
        )) as Row;
        out(body, () => `Removed SSH key ${p(body.id)} (${p(body.fingerprint)}).\n`);
        return 0;
      }
      case 'shell-sessions list': {
        need(args, 0, 'no arguments besides --limit and --cursor');
        const query = new URLSearchParams();
        if (typeof values.limit === 'string') query.set('limit', values.limit);
        if (typeof values.cursor === 'string') query.set('cursor', values.cursor);
        const qs = query.toString();
        const body = (await client.request('GET', `/api/shell-sessions${qs ? `?${qs}` : ''}`)) as { next_cursor: string | null };
        out(body, () => {
          const text = table(
            ['ID', 'INSTANCE', 'KEY', 'VIA', 'STARTED', 'DURATION', 'EXIT', 'END', 'IN', 'OUT', 'COMMAND'],
            items(body).map((x) => [
              s(x.id),
              s(x.instance_id),
              s(x.key_name ?? x.key_id),
              s(x.via),
              s(x.started_at),
              x.duration_ms === null ? 'live' : `${Math.round(Number(x.duration_ms) / 1000)}s`,
              s(x.exit_code ?? x.exit_signal),
              s(x.end_reason),
              s(x.bytes_in),
              s(x.bytes_out),
              s(x.command),
            ]),
          );
          return body.next_cursor ? `${text}(more: --cursor ${p(body.next_cursor)})\n` : text;
        });
        return 0;
      }
      default:
        throw new UsageError(`unknown command: ${positionals.join(' ')}`);
    }
  } catch (err) {
    if (err instanceof UsageError) {
      io.stderr(`${err.message}\n\n${VMKIT_USAGE}`);
      return 2;
    }
    if (err instanceof CommandFailed) {
      io.stderr(json ? `${escapeUnsafeJson(JSON.stringify({ error: 'command_failed', message: err.message }))}\n` : `error: ${err.message}\n`);
      return 1;
    }
    if (err instanceof RequestFailed) {
      io.stderr(json ? `${failureJson(err)}\n` : `error: ${failureText(err)}\n`);
      return 1;
    }
    io.stderr(`error: ${(err as Error).message}\n`);
    return 1;
  }
}
