import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { readJsonBody, sendJson } from './http-json.ts';

/**
 * A local stand-in for api.hetzner.cloud/v1 on 127.0.0.1, answering the documented
 * endpoints the `hetzner` compute provider uses, with Hetzner's shapes:
 *
 *   POST   /v1/servers                       → 201 {server, action, next_actions, root_password}
 *   GET    /v1/servers?label_selector=&name= → {servers, meta.pagination}
 *   GET    /v1/servers/{id}                  → {server}
 *   DELETE /v1/servers/{id}                  → {action}
 *   GET    /v1/actions/{id}                  → {action}
 *
 * Errors as `{"error": {"code", "message", "details"}}` (unauthorized, invalid_input,
 * uniqueness_error, not_found, rate_limit_exceeded), and every answer carries
 * RateLimit-Limit / RateLimit-Remaining / RateLimit-Reset (a UNIX timestamp).
 * Actions run for `actionMs` (a start after its create), then end `success` (or `error`),
 * whether or not anyone polls them, as Hetzner's do.
 */

export interface FakeHetznerOptions {
  token: string;
  /** How long each action runs before it finishes; default 100 ms. */
  actionMs?: number;
  /** Requests per hour (Hetzner's default is 3,600). */
  rateLimit?: number;
}

interface FakeServer {
  id: number;
  name: string;
  status: string;
  created: string;
  labels: Record<string, string>;
  server_type: { name: string };
  image: { name: string };
  datacenter: { location: { name: string } };
  public_net: { ipv4: { ip: string } | null; ipv6: { ip: string } | null };
  user_data: string;
  ssh_keys: (string | number)[];
}

interface FakeAction {
  id: number;
  command: string;
  status: 'running' | 'success' | 'error';
  progress: number;
  started: string;
  finished: string | null;
  resources: { id: number; type: string }[];
  error: { code: string; message: string } | null;
  doneAtMs: number;
  onDone?: (ok: boolean) => void;
  fail?: { code: string; message: string };
}

export interface HetznerRequest {
  method: string;
  path: string;
  atMs: number;
  status: number;
}

const SERVER_TYPES = ['cx22', 'cx32', 'cpx11', 'cpx21', 'cax11'];
const IMAGES = ['ubuntu-24.04', 'ubuntu-22.04', 'debian-12'];
const LOCATIONS = ['fsn1', 'nbg1', 'hel1', 'ash', 'hil', 'sin'];
const LABEL_PART = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;
const HOSTNAME = /^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

export class FakeHetzner {
  readonly url: string;
  readonly requests: HetznerRequest[] = [];
  /** Every request before this UNIX time (seconds) answers 429 rate_limit_exceeded. */
  throttledUntil: number | null = null;
  /** The next create's create_server action ends in this error. */
  failNextCreate: { code: string; message: string } | null = null;
  readonly #server: Server;
  readonly #opts: FakeHetznerOptions;
  readonly #servers = new Map<number, FakeServer>();
  readonly #actions = new Map<number, FakeAction>();
  #nextId = 1000;
  #used = 0;
  #windowStart = Date.now();

  private constructor(server: Server, opts: FakeHetznerOptions) {
    this.#server = server;
    this.#opts = opts;
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`;
  }

  static async start(opts: FakeHetznerOptions): Promise<FakeHetzner> {
    const holder: { fake?: FakeHetzner } = {};
    const server = createServer((req, res) => {
      holder.fake?.handle(req, res).catch((err: unknown) => sendJson(res, 500, { error: { code: 'server_error', message: String(err) } }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    holder.fake = new FakeHetzner(server, opts);
    return holder.fake;
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  /** Servers as the project holds them now (deleted ones are gone). */
  servers(): FakeServer[] {
    return [...this.#servers.values()];
  }

  /** A server made outside VMKit (by hand in the console). */
  addForeignServer(name: string, labels: Record<string, string> = {}): FakeServer {
    const s = this.#newServer({ name, labels, user_data: '', server_type: 'cx22', image: 'ubuntu-24.04', location: 'fsn1', ssh_keys: [] });
    s.status = 'running';
    return s;
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const entry: HetznerRequest = { method: req.method ?? '', path: `${url.pathname}${url.search}`, atMs: Date.now(), status: 0 };
    this.requests.push(entry);
    const body = await readJsonBody(req);
    const reply = (status: number, payload: unknown): void => {
      entry.status = status;
      sendJson(res, status, payload);
    };

    if (req.headers.authorization !== `Bearer ${this.#opts.token}`) {
      return reply(401, { error: { code: 'unauthorized', message: 'unable to authenticate', details: {} } });
    }
    const limit = this.#opts.rateLimit ?? 3600;
    const nowSec = Math.floor(Date.now() / 1000);
    res.setHeader('RateLimit-Limit', String(limit));
    if (this.throttledUntil !== null && nowSec < this.throttledUntil) {
      res.setHeader('RateLimit-Remaining', '0');
      res.setHeader('RateLimit-Reset', String(this.throttledUntil));
      return reply(429, { error: { code: 'rate_limit_exceeded', message: 'limit of 3600 requests per hour reached', details: {} } });
    }
    // One request comes back per (3600 / limit) seconds, as Hetzner documents.
    const refill = Math.floor(((Date.now() - this.#windowStart) / 3_600_000) * limit);
    this.#used = Math.max(0, this.#used - refill) + 1;
    if (refill > 0) this.#windowStart = Date.now();
    res.setHeader('RateLimit-Remaining', String(Math.max(0, limit - this.#used)));
    res.setHeader('RateLimit-Reset', String(nowSec + Math.ceil((this.#used * 3600) / limit)));

    this.#tick();
    const parts = url.pathname.split('/').filter(Boolean);
    if (parts[0] !== 'v1') return reply(404, notFound('resource'));
    const [, kind, idText] = parts;
    const id = Number(idText);

    if (kind === 'servers' && parts.length === 2 && req.method === 'POST') return this.#create(body, reply);
    if (kind === 'servers' && parts.length === 2 && req.method === 'GET') return this.#list(url, reply);
    if (kind === 'servers' && parts.length === 3) {
      const server = this.#servers.get(id);
      if (!server) return reply(404, notFound(`server with ID ${idText}`));
      if (req.method === 'GET') return reply(200, { server: view(server) });
      if (req.method === 'DELETE') {
        server.status = 'deleting';
        const action = this.#newAction('delete_server', server.id, (ok) => ok && this.#servers.delete(server.id));
        return reply(200, { action: actionView(action) });
      }
    }
    if (kind === 'actions' && parts.length === 3 && req.method === 'GET') {
      const action = this.#actions.get(id);
      if (!action) return reply(404, notFound(`action with ID ${idText}`));
      return reply(200, { action: actionView(action) });
    }
    return reply(404, notFound('resource'));
  }

  #create(body: unknown, reply: (status: number, payload: unknown) => void): void {
    const b = (body ?? {}) as Record<string, unknown>;
    const invalid = (field: string, message: string): void =>
      reply(400, { error: { code: 'invalid_input', message: `invalid input in field '${field}'`, details: { fields: [{ name: field, messages: [message] }] } } });
    if (typeof b.name !== 'string' || !HOSTNAME.test(b.name)) return invalid('name', 'must be a valid hostname');
    if (typeof b.server_type !== 'string' || !SERVER_TYPES.includes(b.server_type)) return invalid('server_type', 'server type not found');
    if (typeof b.image !== 'string' || !IMAGES.includes(b.image)) return invalid('image', 'image not found');
    if (b.location !== undefined && (typeof b.location !== 'string' || !LOCATIONS.includes(b.location))) return invalid('location', 'location not found');
    const labels = (b.labels ?? {}) as Record<string, string>;
    for (const [k, v] of Object.entries(labels)) if (!LABEL_PART.test(k) || (v !== '' && !LABEL_PART.test(v))) return invalid('labels', `invalid label ${k}=${v}`);
    if (typeof b.user_data === 'string' && Buffer.byteLength(b.user_data) > 32 * 1024) return invalid('user_data', 'user_data is longer than 32 KiB');
    if ([...this.#servers.values()].some((s) => s.name === b.name)) {
      return reply(409, { error: { code: 'uniqueness_error', message: 'server name is already used', details: { fields: [{ name: 'name' }] } } });
    }
    const sshKeys = Array.isArray(b.ssh_keys) ? (b.ssh_keys as (string | number)[]) : [];
    const server = this.#newServer({ name: b.name, labels, user_data: typeof b.user_data === 'string' ? b.user_data : '', server_type: b.server_type, image: b.image, location: typeof b.location === 'string' ? b.location : 'fsn1', ssh_keys: sshKeys });
    const failure = this.failNextCreate;
    this.failNextCreate = null;
    const create = this.#newAction('create_server', server.id, (ok) => {
      if (!ok) this.#servers.delete(server.id);
      else server.status = 'off';
    }, failure ?? undefined);
    const start = this.#newAction('start_server', server.id, (ok) => {
      if (ok && this.#servers.has(server.id)) server.status = 'running';
    }, undefined, create.doneAtMs);
    reply(201, {
      server: view(server),
      action: actionView(create),
      next_actions: [actionView(start)],
      root_password: sshKeys.length > 0 ? null : randomBytes(12).toString('base64url'),
    });
  }

  #list(url: URL, reply: (status: number, payload: unknown) => void): void {
    let servers = [...this.#servers.values()].sort((a, b) => a.id - b.id);
    const selector = url.searchParams.get('label_selector');
    if (selector !== null) servers = servers.filter((s) => matches(selector, s.labels));
    const name = url.searchParams.get('name');
    if (name !== null) servers = servers.filter((s) => s.name === name);
    const perPage = Math.min(50, Number(url.searchParams.get('per_page') ?? 25));
    const page = Math.max(1, Number(url.searchParams.get('page') ?? 1));
    const last = Math.max(1, Math.ceil(servers.length / perPage));
    reply(200, {
      servers: servers.slice((page - 1) * perPage, page * perPage).map(view),
      meta: { pagination: { page, per_page: perPage, previous_page: page > 1 ? page - 1 : null, next_page: page < last ? page + 1 : null, last_page: last, total_entries: servers.length } },
    });
  }

  #newServer(b: { name: string; labels: Record<string, string>; user_data: string; server_type: string; image: string; location: string; ssh_keys: (string | number)[] }): FakeServer {
    const id = this.#nextId++;
    const server: FakeServer = {
      id,
      name: b.name,
      status: 'initializing',
      created: new Date().toISOString(),
      labels: b.labels,
      server_type: { name: b.server_type },
      image: { name: b.image },
      datacenter: { location: { name: b.location } },
      // TEST-NET-3 (RFC 5737): never routed, so nothing real is ever reached.
      public_net: { ipv4: { ip: `203.0.113.${id % 250}` }, ipv6: { ip: `2001:db8:${id.toString(16)}::/64` } },
      user_data: b.user_data,
      ssh_keys: b.ssh_keys,
    };
    this.#servers.set(id, server);
    return server;
  }

  #newAction(command: string, serverId: number, onDone: (ok: boolean) => void, fail?: { code: string; message: string }, afterMs = Date.now()): FakeAction {
    const action: FakeAction = {
      id: this.#nextId++,
      command,
      status: 'running',
      progress: 0,
      started: new Date().toISOString(),
      finished: null,
      resources: [{ id: serverId, type: 'server' }],
      error: null,
      doneAtMs: afterMs + (this.#opts.actionMs ?? 100),
      onDone,
      ...(fail ? { fail } : {}),
    };
    this.#actions.set(action.id, action);
    return action;
  }

  /** Finishes every action whose time has come, oldest first. */
  #tick(): void {
    const now = Date.now();
    for (const action of [...this.#actions.values()].sort((a, b) => a.doneAtMs - b.doneAtMs)) {
      if (action.status !== 'running') continue;
      if (action.doneAtMs > now) {
        action.progress = 50;
        continue;
      }
      action.status = action.fail ? 'error' : 'success';
      action.error = action.fail ?? null;
      action.progress = 100;
      action.finished = new Date(action.doneAtMs).toISOString();
      action.onDone?.(!action.fail);
    }
  }
}

/** Hetzner's label selector: `k=v`, `k==v`, `k!=v`, `k`, `!k`, comma-separated (all must hold). */
function matches(selector: string, labels: Record<string, string>): boolean {
  return selector.split(',').every((term) => {
    const t = term.trim();
    let m = /^([^!=]+)!=(.*)$/.exec(t);
    if (m) return labels[m[1] ?? ''] !== m[2];
    m = /^([^!=]+)==?(.*)$/.exec(t);
    if (m) return labels[m[1] ?? ''] === m[2];
    if (t.startsWith('!')) return !(t.slice(1) in labels);
    return t in labels;
  });
}

function view(s: FakeServer): Omit<FakeServer, 'user_data' | 'ssh_keys'> {
  const { user_data: _u, ssh_keys: _k, ...rest } = s;
  return rest;
}

function actionView(a: FakeAction): Omit<FakeAction, 'doneAtMs' | 'onDone' | 'fail'> {
  const { doneAtMs: _p, onDone: _o, fail: _f, ...rest } = a;
  return rest;
}

function notFound(what: string): { error: { code: string; message: string; details: object } } {
  return { error: { code: 'not_found', message: `${what} not found`, details: {} } };
}


