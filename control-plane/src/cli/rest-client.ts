import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { errorBodySchema, escapeUnsafeJson, escapeUnsafeText } from '@vmkit/protocol';
import type { ErrorKey } from '@vmkit/protocol';
import { readLogin } from './credentials.ts';

/** A mistake on the command line: printed with the usage, exit code 2. */
export class UsageError extends Error {}

/** The server's `{error, message}` answer (or a reply that was not ours), and the request it answered. */
export class RequestFailed extends Error {
  readonly status: number;
  readonly key: ErrorKey;
  readonly request: { method: string; url: string } | undefined;
  constructor(
    status: number,
    key: ErrorKey,
    message: string,
    request?: { method: string; url: string },
  ) {
    super(message);
    this.status = status;
    this.key = key;
    this.request = request;
  }
}

/** `key: sentence (GET http://…/api/… answered 401)`: every failed request names the URL it tried. */
export function failureText(err: RequestFailed): string {
  const where = err.request ? ` (${err.request.method} ${err.request.url} answered ${err.status})` : '';
  return escapeUnsafeText(`${err.key}: ${err.message}${where}`);
}

/** The same for --json: the server's body plus the URL and status. */
export function failureJson(err: RequestFailed): string {
  const where = err.request ? { url: err.request.url, status: err.status } : {};
  return escapeUnsafeJson(JSON.stringify({ error: err.key, message: err.message, ...where }));
}

export interface Client {
  /** The control plane's base URL, for messages that name it. */
  readonly url: string;
  /** `timeoutMs` bounds a stuck server (default 30 s); long-polls pass their wait plus a margin. */
  request(method: string, path: string, body?: unknown, timeoutMs?: number): Promise<unknown>;
}

/** The control plane did not answer at all: the message names the URL that was tried. */
export class Unreachable extends Error {}

const trimUrl = (url: string) => url.replace(/\/+$/, '');

function whyUnreachable(err: unknown, timeoutMs: number): string {
  if (err instanceof Error && err.name === 'TimeoutError') return `no answer within ${Math.round(timeoutMs / 1000)} s`;
  const cause = (err as { cause?: { code?: unknown; message?: unknown } }).cause;
  if (typeof cause?.code === 'string') return cause.code;
  if (typeof cause?.message === 'string') return cause.message;
  return err instanceof Error ? err.message : String(err);
}

export function makeClient(url: string, key: string): Client {
  return {
    url: trimUrl(url),
    async request(method, path, body, timeoutMs = 30_000) {
      const target = trimUrl(url) + path;
      let res: Response;
      let text: string;
      try {
        res = await fetch(target, {
          method,
          headers: {
            authorization: `Bearer ${key}`,
            ...(body !== undefined && { 'content-type': 'application/json' }),
          },
          ...(body !== undefined && { body: JSON.stringify(body) }),
          signal: AbortSignal.timeout(timeoutMs),
        });
        text = await res.text();
      } catch (err) {
        throw new Unreachable(`cannot reach the control plane at ${target}: ${whyUnreachable(err, timeoutMs)}`);
      }
      const asked = { method, url: target };
      let parsed: unknown = null;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        throw new RequestFailed(res.status, 'invalid_response', 'the server answered with a body that is not JSON', asked);
      }
      if (!res.ok) {
        // Only a registered key is repeated; anything else (a proxy's page, a foreign key) is not ours.
        const e = errorBodySchema.safeParse(parsed);
        if (e.success) throw new RequestFailed(res.status, e.data.error, e.data.message, asked);
        throw new RequestFailed(res.status, 'invalid_response', 'the server answered without a VMKit error body', asked);
      }
      return parsed;
    },
  };
}

/**
 * The key for `url`: --key, else $VMKIT_API_KEY, else --key-file when asked, else the saved
 * login, and that only when it was made for this very URL (a login's key never travels to
 * another server). Never the data directory's admin.key unasked: that key must not be sent
 * to whatever happens to listen on the default port.
 */
export function resolveKey(flag: string | undefined, env: NodeJS.ProcessEnv, url: string, keyFile?: string): string {
  const key = flag || env.VMKIT_API_KEY;
  if (key) return key;
  if (keyFile !== undefined) {
    const file = resolve(env.INIT_CWD || process.cwd(), keyFile);
    let text: string;
    try {
      text = readFileSync(file, 'utf8').trim();
    } catch (err) {
      throw new UsageError(`cannot read --key-file ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
    }
    if (!text) throw new UsageError(`--key-file ${file} is empty`);
    return text;
  }
  const saved = readLogin(env);
  if (saved && trimUrl(saved.url) === trimUrl(url)) return saved.key;
  throw new UsageError(noKeyMessage(url, saved?.url));
}

export function noKeyMessage(url: string, savedUrl?: string): string {
  return [
    `no API key for ${url}.`,
    ...(savedUrl ? [`(the saved login is for ${savedUrl}, not this URL)`] : []),
    'Get one of these ways:',
    `  vmkit login --url ${url}           asks for the key once and saves it for this URL`,
    '  --key vmk_... or VMKIT_API_KEY=vmk_...   for one command or one shell',
    '  --key-file data/admin.key                 on the server machine: the admin key `npm start` printed',
    'More keys: `vmkit keys create --name NAME --scopes ...` (with an admin key).',
  ].join('\n');
}

/** --url, else $VMKIT_URL, else the saved login's URL, else the local default. */
export function resolveUrl(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  return flag || env.VMKIT_URL || readLogin(env)?.url || 'http://127.0.0.1:8080';
}
