import { and, asc, eq } from 'drizzle-orm';
import type { Db } from './index.ts';
import type { Row } from './schema.ts';
import type { DnsRecordStore } from '../providers/dns/local.ts';
import type { DnsRecord, DnsRecordType } from '../providers/dns/types.ts';

export type DnsRecordRow = Row<'dnsRecords'>;

/**
 * The `local` DNS provider's record book for one workspace, in the `dns_records` table
 * (the port is the provider's, see providers/dns/local.ts). One row per name and type
 * in the workspace; another workspace's rows are never read or written.
 */
export class DbDnsRecordStore implements DnsRecordStore {
  readonly #db: Db;
  readonly #workspaceId: string;
  readonly #zone: string;
  readonly #now: () => number;

  constructor(db: Db, workspaceId: string, zone: string, now: () => number = Date.now) {
    this.#db = db;
    this.#workspaceId = workspaceId;
    this.#zone = zone;
    this.#now = now;
  }

  async get(name: string, type: DnsRecordType): Promise<DnsRecord | null> {
    const [row] = await this.#db.orm.select().from(this.#db.t.dnsRecords).where(this.#is(name, type));
    return row ? recordOf(row) : null;
  }

  /** Keeps the provider's record id on first insert; an update keeps the row (and its id). */
  async put(record: DnsRecord): Promise<void> {
    const { dnsRecords } = this.#db.t;
    const now = this.#now();
    const values = { zone: this.#zone, content: record.content, ttl: record.ttl, owner: record.owner, updatedAt: now };
    await this.#db.orm
      .insert(dnsRecords)
      .values({ id: record.id, workspaceId: this.#workspaceId, name: record.name.toLowerCase(), type: record.type, createdAt: now, ...values })
      .onConflictDoUpdate({ target: [dnsRecords.workspaceId, dnsRecords.name, dnsRecords.type], set: values });
  }

  async delete(name: string, type: DnsRecordType): Promise<void> {
    await this.#db.orm.delete(this.#db.t.dnsRecords).where(this.#is(name, type));
  }

  async list(): Promise<DnsRecord[]> {
    return (await listDnsRecords(this.#db, this.#workspaceId)).map(recordOf);
  }

  #is(name: string, type: DnsRecordType) {
    const { dnsRecords } = this.#db.t;
    return and(eq(dnsRecords.workspaceId, this.#workspaceId), eq(dnsRecords.name, name.toLowerCase()), eq(dnsRecords.type, type));
  }
}

export async function listDnsRecords(db: Db, workspaceId: string): Promise<DnsRecordRow[]> {
  const { dnsRecords } = db.t;
  return db.orm.select().from(dnsRecords).where(eq(dnsRecords.workspaceId, workspaceId)).orderBy(asc(dnsRecords.name), asc(dnsRecords.type));
}

function recordOf(row: DnsRecordRow): DnsRecord {
  return { id: row.id, name: row.name, type: row.type as DnsRecordType, content: row.content, ttl: row.ttl, proxied: false, owner: row.owner };
}
