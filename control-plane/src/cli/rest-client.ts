import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { errorBodySchema } from '@vmkit/protocol';
import type { ErrorKey } from '@vmkit/protocol';

/** A mistake on the command line: printed with the usage, exit code 2. */
export class UsageError extends Error {}

/** The server's `{error, message}` answer (or a reply that was not ours). */
export class RequestFailed extends Error {
  constructor(
    readonly status: number,
    readonly key: ErrorKey,
    message: string,
  ) {
    super(message);
  }
}

export interface Client {
  /** `timeoutMs` bounds a stuck server (default 30 s); long-polls pass their wait plus a margin. */
  request(method: string, path: string, body?: unknown, timeoutMs?: number): Promise<unknown>;
}

export function makeClient(url: string, key: string): Client {
  return {
    async request(method, path, body, timeoutMs = 30_000) {
      const res = await fetch(url.replace(/\/+$/, '') + path, {
        method,
        headers: {
          authorization: `Bearer ${key}`,
          ...(body !== undefined && { 'content-type': 'application/json' }),
        },
        ...(body !== undefined && { body: JSON.stringify(body) }),
        signal: AbortSignal.timeout(timeoutMs),
      });
      const text = await res.text();
      let parsed: unknown = null;
      try {
        parsed = text ? JSON.parse(text) : null;
      } catch {
        throw new RequestFailed(res.status, 'invalid_response', `the server answered ${res.status} with a body that is not JSON`);
      }
      if (!res.ok) {
        // Only a registered key is repeated; anything else (a proxy's page, a foreign key) is not ours.
        const e = errorBodySchema.safeParse(parsed);
        if (e.success) throw new RequestFailed(res.status, e.data.error, e.data.message);
        throw new RequestFailed(res.status, 'invalid_response', `the server answered HTTP ${res.status} without a VMKit error body`);
      }
      return parsed;
    },
  };
}

export function resolveKey(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  const key = flag ?? env.VMKIT_API_KEY;
  if (key) return key;
  const file = join(resolve(env.INIT_CWD || process.cwd(), env.VMKIT_DATA_DIR || './data'), 'admin.key');
  try {
    return readFileSync(file, 'utf8').trim();
  } catch {
    throw new UsageError(`no API key: pass --key, set VMKIT_API_KEY, or run where ${file} exists`);
  }
}

export function resolveUrl(flag: string | undefined, env: NodeJS.ProcessEnv): string {
  return flag ?? env.VMKIT_URL ?? 'http://127.0.0.1:8080';
}
