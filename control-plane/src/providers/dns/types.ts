import { createHash } from 'node:crypto';
import type { ErrorKey } from '@vmkit/protocol';

export type DnsRecordType = 'A' | 'AAAA';

/** What VMKit wants in DNS for one environment. */
export interface DnsRecordSpec {
  /** Fully qualified, lowercase: `shop-staging.example.com` (see hostFor). */
  name: string;
  type: DnsRecordType;
  /** The VM's address. */
  content: string;
  /** Seconds; 1 means "automatic" on Cloudflare. Default 60 so a moved VM is found soon. */
  ttl?: number;
  /**
   * Who in VMKit the record belongs to (the environment id): written into VMKit's marker
   * so one environment never takes over another's record.
   */
  owner: string;
}

export interface DnsRecord {
  /** The provider's id for the record. */
  id: string;
  name: string;
  type: DnsRecordType;
  content: string;
  ttl: number;
  proxied: boolean;
  /** VMKit's owner from the marker; null for a record VMKit did not create. */
  owner: string | null;
}

export interface UpsertedDnsRecord extends DnsRecord {
  /** What this call did: the state machine logs it, a retry sees `unchanged`. */
  outcome: 'created' | 'updated' | 'unchanged';
}

/**
 * Points a name at a VM. Implemented by `local` (records kept by the control plane) and
 * `cloudflare`. Every operation is idempotent, and only records VMKit created (carrying
 * its marker, for the same owner) are ever changed or removed: anything else is a
 * `dns_record_conflict`, never overwritten. Providers never touch the database.
 */
export interface DnsProvider {
  readonly name: string;
  /** The zone names are made under, e.g. `example.com`. */
  readonly zone: string;
  /** Creates the record, or points VMKit's existing one at `content`. */
  upsert(spec: DnsRecordSpec): Promise<UpsertedDnsRecord>;
  find(name: string, type: DnsRecordType): Promise<DnsRecord | null>;
  /** Removes VMKit's record for `owner`; a missing record is success. */
  remove(name: string, type: DnsRecordType, owner: string): Promise<void>;
}

/** A failure of a DNS provider with the error key the REST API answers with. */
export class DnsError extends Error {
  override name = 'DnsError';
  readonly key: ErrorKey;
  constructor(
    key: ErrorKey,
    message: string,
  ) {
    super(message);
    this.key = key;
  }
}

/** The marker VMKit writes on records it creates (Cloudflare's `comment`, at most 100 characters on every plan). */
export const MARKER_PREFIX = 'vmkit-managed';

export function markerFor(owner: string): string {
  return `${MARKER_PREFIX} owner=${owner}`.slice(0, 100);
}

/** The owner a marker names; null when the text is not VMKit's marker. */
export function ownerOfMarker(text: string | null | undefined): string | null {
  const m = /^vmkit-managed owner=(\S+)$/.exec(text ?? '');
  return m?.[1] ?? null;
}

const ZONE = /^(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$/;

/**
 * `<app>-<dest>.<zone>`, made DNS-safe: lowercase, runs of anything else than letters
 * and digits become `-`. A label past 63 characters is cut and ends in 8 hex of its
 * hash, so two long names stay apart.
 */
export function hostFor(app: string, dest: string, zone: string): string {
  const z = zone.toLowerCase().replace(/\.$/, '');
  if (!ZONE.test(z)) throw new DnsError('invalid_request', `${JSON.stringify(zone)} is not a DNS zone name.`);
  const full = `${app}-${dest}`
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  if (full === '' || full === '-') throw new DnsError('invalid_request', 'The app and environment names leave nothing for a DNS name.');
  const label = full.length <= 63 ? full : `${full.slice(0, 54).replace(/-+$/, '')}-${createHash('sha256').update(full).digest('hex').slice(0, 8)}`;
  return `${label}.${z}`;
}
