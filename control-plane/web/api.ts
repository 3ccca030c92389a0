/** The dashboard's REST client: same routes as every other client, with the session cookie and its CSRF token. */

export class ApiFailure extends Error {
  readonly status: number;
  readonly key: string;
  constructor(
    status: number,
    key: string,
    message: string,
  ) {
    super(message);
    this.status = status;
    this.key = key;
  }
}

let csrfToken: string | null = null;
let onSessionEnded: (message: string) => void = () => undefined;

export function setCsrfToken(token: string | null): void {
  csrfToken = token;
}

/** Called once by the app: a 401 anywhere means the session is over (signed out, key revoked or expired). */
export function whenSessionEnds(fn: (message: string) => void): void {
  onSessionEnded = fn;
}

export function sessionEnded(message: string): void {
  onSessionEnded(message);
}

export async function api<T>(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', path: string, body?: unknown): Promise<T> {
  const headers: Record<string, string> = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (method !== 'GET' && csrfToken !== null) headers['x-vmkit-csrf'] = csrfToken;
  let res: Response;
  try {
    res = await fetch(path, { method, headers, credentials: 'same-origin', ...(body === undefined ? {} : { body: JSON.stringify(body) }) });
  } catch {
    throw new ApiFailure(0, 'unreachable', 'The control plane did not answer; check that it is running and reload.');
  }
  const text = await res.text();
  let data: unknown = null;
  try {
    data = text === '' ? null : JSON.parse(text);
  } catch {
    data = null;
  }
  if (!res.ok) {
    const err = (data ?? {}) as { error?: string; message?: string };
    const failure = new ApiFailure(res.status, err.error ?? `http_${res.status}`, err.message ?? `The server answered ${res.status}.`);
    if (res.status === 401 && path !== '/api/session') sessionEnded(failure.message);
    throw failure;
  }
  return data as T;
}

/** The message to show for anything thrown by api(). */
export function messageOf(err: unknown): string {
  if (err instanceof ApiFailure) return err.message;
  return err instanceof Error ? err.message : String(err);
}

export function q(params: Record<string, string | number | undefined | null>): string {
  const sp = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') sp.set(k, String(v));
  const s = sp.toString();
  return s === '' ? '' : `?${s}`;
}
