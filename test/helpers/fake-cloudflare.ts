import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import { isIPv4, isIPv6 } from 'node:net';
import type { AddressInfo } from 'node:net';
import { readJsonBody, sendJson } from './http-json.ts';

/**
 * A local stand-in for api.cloudflare.com/client/v4 on 127.0.0.1, answering the DNS
 * records endpoints as documented, in Cloudflare's envelope
 * `{success, errors: [{code, message}], messages, result}`:
 *
 *   GET    /zones/{zone}/dns_records?name=&type=  → exact-name matches
 *   POST   /zones/{zone}/dns_records              → 81058 for an identical record, 81053 over a CNAME
 *   PATCH  /zones/{zone}/dns_records/{id}         → 81044 when it does not exist
 *   DELETE /zones/{zone}/dns_records/{id}
 *
 * Unknown zone: 400 with 7003; bad token: 403 with 10000; throttled: 429 with
 * Retry-After.
 */

export interface FakeCfRecord {
  id: string;
  zone_id: string;
  zone_name: string;
  name: string;
  type: string;
  content: string;
  proxiable: boolean;
  proxied: boolean;
  ttl: number;
  comment: string | null;
  tags: string[];
  created_on: string;
  modified_on: string;
}

export interface CfRequest {
  method: string;
  path: string;
  body: unknown;
  status: number;
  atMs: number;
}

export class FakeCloudflare {
  readonly url: string;
  readonly requests: CfRequest[] = [];
  /** Runs just before the next POST is handled (a concurrent writer slipping in). */
  beforeNextPost: (() => void) | null = null;
  /** The next `count` requests answer 429 with this Retry-After. */
  throttle: { count: number; retryAfterSec: number } | null = null;
  readonly #server: Server;
  readonly #token: string;
  readonly #zoneId: string;
  readonly #zoneName: string;
  readonly #records = new Map<string, FakeCfRecord>();

  private constructor(server: Server, opts: { token: string; zoneId: string; zoneName: string }) {
    this.#server = server;
    this.#token = opts.token;
    this.#zoneId = opts.zoneId;
    this.#zoneName = opts.zoneName;
    this.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/client/v4`;
  }

  static async start(opts: { token: string; zoneId: string; zoneName: string }): Promise<FakeCloudflare> {
    const holder: { fake?: FakeCloudflare } = {};
    const server = createServer((req, res) => {
      holder.fake?.handle(req, res).catch((err: unknown) => sendJson(res, 500, envelope(null, [{ code: 10001, message: String(err) }])));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    holder.fake = new FakeCloudflare(server, opts);
    return holder.fake;
  }

  close(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }

  records(): FakeCfRecord[] {
    return [...this.#records.values()];
  }

  /** A record made by someone else (the dashboard, another tool). */
  addRecord(r: { name: string; type: string; content: string; comment?: string | null; ttl?: number; proxied?: boolean }): FakeCfRecord {
    const now = new Date().toISOString();
    const record: FakeCfRecord = {
      id: randomBytes(16).toString('hex'),
      zone_id: this.#zoneId,
      zone_name: this.#zoneName,
      name: r.name,
      type: r.type,
      content: r.content,
      proxiable: true,
      proxied: r.proxied ?? false,
      ttl: r.ttl ?? 1,
      comment: r.comment ?? null,
      tags: [],
      created_on: now,
      modified_on: now,
    };
    this.#records.set(record.id, record);
    return record;
  }

  async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://fake');
    const body = await readJsonBody(req);
    const entry: CfRequest = { method: req.method ?? '', path: `${url.pathname}${url.search}`, body, status: 0, atMs: Date.now() };
    this.requests.push(entry);
    const reply = (status: number, payload: unknown): void => {
      entry.status = status;
      sendJson(res, status, payload);
    };
    const fail = (status: number, code: number, message: string): void => reply(status, envelope(null, [{ code, message }]));

    if (this.throttle && this.throttle.count > 0) {
      this.throttle.count--;
      res.setHeader('retry-after', String(this.throttle.retryAfterSec));
      return fail(429, 971, 'Please wait and consider throttling your request speed');
    }
    if (req.headers.authorization !== `Bearer ${this.#token}`) return fail(403, 10000, 'Authentication error');
    const parts = url.pathname.split('/').filter(Boolean);
    // client v4 zones {zone} dns_records [id]
    if (parts[0] !== 'client' || parts[1] !== 'v4' || parts[2] !== 'zones' || parts[4] !== 'dns_records' || parts.length > 6) {
      return fail(404, 7000, 'No route for that URI');
    }
    if (parts[3] !== this.#zoneId) return fail(400, 7003, `Could not route to ${url.pathname}, perhaps your object identifier is invalid?`);
    const id = parts[5];

    if (req.method === 'GET' && id === undefined) {
      const name = url.searchParams.get('name') ?? url.searchParams.get('name.exact');
      const type = url.searchParams.get('type');
      const found = this.records().filter((r) => (name === null || r.name === name.toLowerCase()) && (type === null || r.type === type));
      return reply(200, { ...envelope(found), result_info: { page: 1, per_page: 100, count: found.length, total_count: found.length, total_pages: 1 } });
    }
    if (req.method === 'POST' && id === undefined) {
      const hook = this.beforeNextPost;
      this.beforeNextPost = null;
      hook?.();
      const b = (body ?? {}) as Partial<FakeCfRecord>;
      const invalid = this.#validate(b);
      if (invalid) return fail(400, invalid.code, invalid.message);
      const name = (b.name ?? '').toLowerCase();
      if (this.records().some((r) => r.name === name && r.type === 'CNAME')) return fail(400, 81053, 'An A, AAAA, or CNAME record with that host already exists.');
      if (this.records().some((r) => r.name === name && r.type === b.type && r.content === b.content)) return fail(400, 81058, 'An identical record already exists.');
      const record = this.addRecord({ name, type: b.type ?? 'A', content: b.content ?? '', comment: b.comment ?? null, ttl: b.ttl ?? 1, proxied: b.proxied ?? false });
      return reply(200, envelope(record));
    }
    const record = id === undefined ? undefined : this.#records.get(id);
    if (req.method === 'PATCH' && id !== undefined) {
      if (!record) return fail(404, 81044, 'Record does not exist.');
      const b = (body ?? {}) as Partial<FakeCfRecord>;
      const invalid = this.#validate({ ...record, ...b });
      if (invalid) return fail(400, invalid.code, invalid.message);
      Object.assign(record, pick(b, ['content', 'ttl', 'proxied', 'comment']), { modified_on: new Date().toISOString() });
      return reply(200, envelope(record));
    }
    if (req.method === 'DELETE' && id !== undefined) {
      if (!record) return fail(404, 81044, 'Record does not exist.');
      this.#records.delete(record.id);
      return reply(200, envelope({ id: record.id }));
    }
    return fail(405, 10000, 'Method not allowed');
  }

  #validate(b: Partial<FakeCfRecord>): { code: number; message: string } | null {
    const name = (b.name ?? '').toLowerCase();
    if (name !== this.#zoneName && !name.endsWith(`.${this.#zoneName}`)) return { code: 9005, message: 'Content for A record is invalid. Must be a valid name in the zone.' };
    if (b.type === 'A' && !isIPv4(b.content ?? '')) return { code: 9005, message: 'Content for A record is invalid. Must be a valid IPv4 address' };
    if (b.type === 'AAAA' && !isIPv6(b.content ?? '')) return { code: 9006, message: 'Content for AAAA record is invalid. Must be a valid IPv6 address' };
    if (b.ttl !== undefined && b.ttl !== 1 && (b.ttl < 60 || b.ttl > 86400)) return { code: 9021, message: 'Invalid TTL. Must be between 60 and 86400 seconds, or 1 for Automatic.' };
    if (b.comment && b.comment.length > 100) return { code: 9102, message: 'DNS record comment cannot be longer than 100 characters.' };
    return null;
  }
}

function envelope(result: unknown, errors: { code: number; message: string }[] = []): { success: boolean; errors: { code: number; message: string }[]; messages: never[]; result: unknown } {
  return { success: errors.length === 0, errors, messages: [], result };
}

function pick(o: Partial<FakeCfRecord>, keys: (keyof FakeCfRecord)[]): Partial<FakeCfRecord> {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}


