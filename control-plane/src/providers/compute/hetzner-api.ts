import { RateLimitedError, RestClient, UnreachableError } from '../rest.ts';
import type { RestClientOptions, RestResponse } from '../rest.ts';
import { ComputeError } from './types.ts';

/** Hetzner Cloud's documented API root. */
export const HETZNER_API_URL = 'https://api.hetzner.cloud/v1';

export interface HetznerAction {
  id: number;
  command: string;
  status: 'running' | 'success' | 'error';
  progress: number;
  error: { code: string; message: string } | null;
}

export interface HetznerServer {
  id: number;
  name: string;
  /** initializing, starting, running, stopping, off, deleting, migrating, rebuilding, unknown. */
  status: string;
  labels: Record<string, string>;
  public_net: { ipv4: { ip: string } | null; ipv6: { ip: string } | null };
}

export interface CreateServerRequest {
  name: string;
  server_type: string;
  image: string;
  location?: string;
  labels: Record<string, string>;
  user_data: string;
  ssh_keys?: (string | number)[];
  start_after_create: true;
  public_net: { enable_ipv4: boolean; enable_ipv6: boolean };
}

export interface CreateServerResponse {
  server: HetznerServer;
  action: HetznerAction;
  next_actions: HetznerAction[];
  root_password: string | null;
}

interface ServerPage {
  servers: HetznerServer[];
  meta?: { pagination?: { next_page?: number | null } };
}

interface HetznerErrorBody {
  error?: { code?: string; message?: string };
}

export type HetznerApiOptions = Omit<RestClientOptions, 'provider' | 'baseUrl' | 'headers'> & {
  token: string;
  /** Default https://api.hetzner.cloud/v1. */
  baseUrl?: string;
};

/**
 * The few Hetzner Cloud endpoints the provider needs, each failure turned into a
 * ComputeError with a registered key and Hetzner's own code and message.
 */
export class HetznerApi {
  readonly #rest: RestClient;

  constructor(opts: HetznerApiOptions) {
    const { token, baseUrl, ...rest } = opts;
    this.#rest = new RestClient({ ...rest, provider: 'Hetzner', baseUrl: baseUrl ?? HETZNER_API_URL, headers: { authorization: `Bearer ${token}` } });
  }

  /** 201, or the response of a refusal for the caller to judge (409 uniqueness_error). */
  async createServer(req: CreateServerRequest): Promise<{ created: CreateServerResponse } | { refused: { status: number; code: string; message: string } }> {
    const res = await this.#call<CreateServerResponse>('POST', '/servers', req);
    if (res.status === 201) return { created: res.body };
    if (res.status === 409) return { refused: { status: res.status, ...errorOf(res) } };
    throw failure(res, 'create the server');
  }

  async getAction(id: number): Promise<HetznerAction> {
    const res = await this.#call<{ action: HetznerAction }>('GET', `/actions/${id}`);
    if (res.status !== 200) throw failure(res, `read action ${id}`);
    return res.body.action;
  }

  async getServer(id: number): Promise<HetznerServer | null> {
    const res = await this.#call<{ server: HetznerServer }>('GET', `/servers/${id}`);
    if (res.status === 404) return null;
    if (res.status !== 200) throw failure(res, `read server ${id}`);
    return res.body.server;
  }

  /** Every server matching a label selector (`k=v,k2=v2`), following the pagination. */
  async listServers(query: { label_selector?: string; name?: string }): Promise<HetznerServer[]> {
    const out: HetznerServer[] = [];
    for (let page: number | null = 1; page !== null && page <= 100; ) {
      const q = new URLSearchParams({ ...query, per_page: '50', page: String(page) });
      const res: RestResponse<ServerPage> = await this.#call<ServerPage>('GET', `/servers?${q.toString()}`);
      if (res.status !== 200 || !Array.isArray(res.body.servers)) throw failure(res, 'list servers');
      out.push(...res.body.servers);
      page = res.body.meta?.pagination?.next_page ?? null;
    }
    return out;
  }

  /** The delete action, or null when the server is already gone. */
  async deleteServer(id: number): Promise<HetznerAction | null> {
    const res = await this.#call<{ action: HetznerAction }>('DELETE', `/servers/${id}`);
    if (res.status === 404) return null;
    if (res.status !== 200) throw failure(res, `delete server ${id}`);
    return res.body.action;
  }

  async #call<T>(method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<RestResponse<T>> {
    try {
      return await this.#rest.request<T>(method, path, body);
    } catch (err) {
      if (err instanceof RateLimitedError) throw new ComputeError('provider_rate_limited', `${err.message} (Hetzner allows 3,600 requests an hour per project.)`);
      if (err instanceof UnreachableError) throw new ComputeError('provider_unavailable', err.message);
      throw err;
    }
  }
}

function errorOf(res: RestResponse<unknown>): { code: string; message: string } {
  const e = (res.body as HetznerErrorBody | null)?.error;
  return { code: typeof e?.code === 'string' ? e.code : `http_${res.status}`, message: typeof e?.message === 'string' ? e.message.slice(0, 300) : 'no message' };
}

/**
 * Hetzner's error codes by what the user has to do: fix the token (unauthorized,
 * forbidden, token_readonly), wait (5xx, maintenance, timeout), or change the request
 * (invalid_input, resource_limit_exceeded, placement_error, ...).
 */
function failure(res: RestResponse<unknown>, what: string): ComputeError {
  const { code, message } = errorOf(res);
  const said = `Hetzner could not ${what}: ${code}: ${message}`;
  if (res.status === 401 || code === 'unauthorized') {
    return new ComputeError('provider_auth_failed', `${said}. Check the Hetzner API token in the workspace's compute settings.`);
  }
  if (res.status === 403 && (code === 'forbidden' || code === 'token_readonly')) {
    return new ComputeError('provider_auth_failed', `${said}. The Hetzner API token needs Read & Write permission.`);
  }
  if (res.status >= 500 || code === 'maintenance' || code === 'timeout' || code === 'service_error') return new ComputeError('provider_unavailable', said);
  return new ComputeError('provision_failed', said);
}
