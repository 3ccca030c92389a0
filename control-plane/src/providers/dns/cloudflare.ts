/**
 * The `cloudflare` DNS provider: one A (or AAAA) record per environment in a Cloudflare
 * zone, through the v4 API (list by name and type, POST, PATCH, DELETE).
 *
 * VMKit only ever changes records it created: each carries the marker
 * `vmkit-managed owner=<environment id>` in its `comment`. A record of the same name
 * without the marker (someone's own) or with another owner is refused with
 * dns_record_conflict and left as it is. `proxied` is false unless asked: Kamal's proxy
 * gets its Let's Encrypt certificate over plain HTTP-01, which Cloudflare's proxy would
 * answer itself.
 */
import { RateLimitedError, RestClient, UnreachableError } from '../rest.ts';
import type { RestClientOptions, RestResponse } from '../rest.ts';
import { checkInZone } from './local.ts';
import { DnsError, hostFor, markerFor, ownerOfMarker } from './types.ts';
import type { DnsProvider, DnsRecord, DnsRecordSpec, DnsRecordType, UpsertedDnsRecord } from './types.ts';

export const CLOUDFLARE_API_URL = 'https://api.cloudflare.com/client/v4';
/** "The record already exists." / "An identical record already exists.": someone (maybe us, a moment ago) made it. */
const ALREADY_EXISTS = new Set([81057, 81058]);

export type CloudflareDnsOptions = Omit<RestClientOptions, 'provider' | 'baseUrl' | 'headers'> & {
  /** An API token with Zone → DNS → Edit on the zone. */
  apiToken: string;
  zoneId: string;
  /** The zone's name, e.g. `example.com`. */
  zoneName: string;
  /** Default https://api.cloudflare.com/client/v4. */
  baseUrl?: string;
  /** Default false (see above). */
  proxied?: boolean;
};

interface CfRecord {
  id: string;
  name: string;
  type: string;
  content: string;
  ttl: number;
  proxied: boolean;
  comment: string | null;
}

interface CfEnvelope<T> {
  success: boolean;
  errors: { code: number; message: string }[];
  result: T;
}

export class CloudflareDnsProvider implements DnsProvider {
  readonly name = 'cloudflare';
  readonly zone: string;
  readonly #rest: RestClient;
  readonly #zoneId: string;
  readonly #proxied: boolean;

  constructor(opts: CloudflareDnsOptions) {
    const { apiToken, zoneId, zoneName, baseUrl, proxied, ...rest } = opts;
    if (!/^[A-Za-z0-9]{1,64}$/.test(zoneId)) throw new DnsError('invalid_request', 'The Cloudflare zone id must be the 32-character id from the zone overview.');
    this.zone = zoneName.toLowerCase().replace(/\.$/, '');
    hostFor('a', 'b', this.zone); // validates the zone name
    this.#zoneId = zoneId;
    this.#proxied = proxied ?? false;
    this.#rest = new RestClient({ ...rest, provider: 'Cloudflare', baseUrl: baseUrl ?? CLOUDFLARE_API_URL, headers: { authorization: `Bearer ${apiToken}` } });
  }

  async upsert(spec: DnsRecordSpec): Promise<UpsertedDnsRecord> {
    checkInZone(spec.name, this.zone);
    const ttl = spec.ttl ?? 60;
    const marker = markerFor(spec.owner);
    // Twice at most: a POST that meets 81057/81058 lost a race to a record that now exists.
    for (let round = 0; round < 2; round++) {
      const existing = await this.#list(spec.name, spec.type);
      if (existing.length > 0) return this.#update(existing, spec, ttl, marker);
      const res = await this.#call<CfRecord>('POST', this.#path(), { type: spec.type, name: spec.name, content: spec.content, ttl, proxied: this.#proxied, comment: marker });
      if (res.status === 200 && res.body.success) return { ...view(res.body.result), outcome: 'created' };
      if (!cfCodes(res).some((c) => ALREADY_EXISTS.has(c))) throw failure(res, `create ${spec.type} ${spec.name}`);
    }
    throw new DnsError('dns_failed', `Cloudflare says ${spec.type} ${spec.name} exists, but does not list it; retry shortly.`);
  }

  async find(name: string, type: DnsRecordType): Promise<DnsRecord | null> {
    const [first] = await this.#list(name, type);
    return first ? view(first) : null;
  }

  async remove(name: string, type: DnsRecordType, owner: string): Promise<void> {
    for (const record of await this.#list(name, type)) {
      refuseForeign(record, owner, 'remove');
      const res = await this.#call<{ id: string }>('DELETE', this.#path(record.id));
      if (res.status === 404) continue;
      if (!res.body.success) throw failure(res, `delete ${type} ${name}`);
    }
  }

  async #update(existing: CfRecord[], spec: DnsRecordSpec, ttl: number, marker: string): Promise<UpsertedDnsRecord> {
    for (const record of existing) refuseForeign(record, spec.owner, 'change');
    const [record, ...extra] = existing;
    if (!record || extra.length > 0) {
      throw new DnsError('dns_record_conflict', `Cloudflare has ${existing.length} ${spec.type} records named ${spec.name}; VMKit keeps exactly one. Delete the extra ones.`);
    }
    if (record.content === spec.content && record.ttl === ttl && record.proxied === this.#proxied) return { ...view(record), outcome: 'unchanged' };
    const res = await this.#call<CfRecord>('PATCH', this.#path(record.id), { content: spec.content, ttl, proxied: this.#proxied, comment: marker });
    if (res.status !== 200 || !res.body.success) throw failure(res, `update ${spec.type} ${spec.name}`);
    return { ...view(res.body.result), outcome: 'updated' };
  }

  async #list(name: string, type: DnsRecordType): Promise<CfRecord[]> {
    const q = new URLSearchParams({ name, type, per_page: '100' });
    const res = await this.#call<CfRecord[]>('GET', `${this.#path()}?${q.toString()}`);
    if (res.status !== 200 || !res.body.success || !Array.isArray(res.body.result)) throw failure(res, `look up ${type} ${name}`);
    // `name` matches exactly; the filter only guards against a server that matched loosely.
    return res.body.result.filter((r) => r.name.toLowerCase() === name && r.type === type);
  }

  #path(id?: string): string {
    return `/zones/${encodeURIComponent(this.#zoneId)}/dns_records${id === undefined ? '' : `/${encodeURIComponent(id)}`}`;
  }

  async #call<T>(method: 'GET' | 'POST' | 'PATCH' | 'DELETE', path: string, body?: unknown): Promise<RestResponse<CfEnvelope<T>>> {
    try {
      return await this.#rest.request<CfEnvelope<T>>(method, path, body);
    } catch (err) {
      if (err instanceof RateLimitedError) throw new DnsError('provider_rate_limited', err.message);
      if (err instanceof UnreachableError) throw new DnsError('provider_unavailable', err.message);
      throw err;
    }
  }
}

function refuseForeign(record: CfRecord, owner: string, verb: 'change' | 'remove'): void {
  const markedFor = ownerOfMarker(record.comment);
  if (markedFor === owner) return;
  throw new DnsError(
    'dns_record_conflict',
    markedFor === null
      ? `Cloudflare already has ${record.type} ${record.name} -> ${record.content}, and VMKit did not create it (its comment has no "vmkit-managed" marker); VMKit will not ${verb} it. Delete it, or deploy under another app or environment name.`
      : `${record.type} ${record.name} is VMKit's record for ${markedFor}, not ${owner}; VMKit will not ${verb} it.`,
  );
}

function view(r: CfRecord): DnsRecord {
  return { id: r.id, name: r.name, type: r.type as DnsRecordType, content: r.content, ttl: r.ttl, proxied: r.proxied, owner: ownerOfMarker(r.comment) };
}

function cfCodes(res: RestResponse<CfEnvelope<unknown>>): number[] {
  return Array.isArray(res.body?.errors) ? res.body.errors.map((e) => e.code) : [];
}

/**
 * Cloudflare's refusals by what the user has to do: 9109/10000 and 401/403 are the token
 * (it needs Zone → DNS → Edit on this zone), 7003/7000 a wrong zone id, 5xx wait.
 */
function failure(res: RestResponse<CfEnvelope<unknown>>, what: string): DnsError {
  const errors = Array.isArray(res.body?.errors) ? res.body.errors : [];
  const said = `Cloudflare could not ${what}: ${errors.map((e) => `${e.code} ${e.message}`).join('; ') || `HTTP ${res.status}`}`;
  const codes = errors.map((e) => e.code);
  if (res.status === 401 || res.status === 403 || codes.includes(9109) || codes.includes(10000)) {
    return new DnsError('provider_auth_failed', `${said}. The API token needs Zone → DNS → Edit on this zone.`);
  }
  if (codes.includes(7003) || codes.includes(7000)) return new DnsError('dns_failed', `${said}. Check the zone id in the workspace's DNS settings.`);
  if (res.status >= 500) return new DnsError('provider_unavailable', said);
  return new DnsError('dns_failed', said);
}
