/* eslint-disable @typescript-eslint/require-await -- async on purpose: SQLite answers synchronously, a PostgreSQL dialect will not, and callers already await. */
import { and, asc, eq } from 'drizzle-orm';
import type { Db } from './index.ts';
import { dnsRecords } from './schema.ts';
import type { DnsRecordStore } from '../providers/dns/local.ts';
import type { DnsRecord, DnsRecordType } from '../providers/dns/types.ts';

export type DnsRecordRow = typeof dnsRecords.$inferSelect;

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
    const row = this.#db.select().from(dnsRecords).where(this.#is(name, type)).get();
    return row ? recordOf(row) : null;
  }

  /** Keeps the provider's record id on first insert; an update keeps the row (and its id). */
  async put(record: DnsRecord): Promise<void> {
    const now = this.#now();
    const values = { zone: this.#zone, content: record.content, ttl: record.ttl, owner: record.owner, updatedAt: now };
    this.#db
      .insert(dnsRecords)
      .values({ id: record.id, workspaceId: this.#workspaceId, name: record.name.toLowerCase(), type: record.type, createdAt: now, ...values })
      .onConflictDoUpdate({ target: [dnsRecords.workspaceId, dnsRecords.name, dnsRecords.type], set: values })
      .run();
  }

  async delete(name: string, type: DnsRecordType): Promise<void> {
    this.#db.delete(dnsRecords).where(this.#is(name, type)).run();
  }

  async list(): Promise<DnsRecord[]> {
    return (await listDnsRecords(this.#db, this.#workspaceId)).map(recordOf);
  }

  #is(name: string, type: DnsRecordType) {
    return and(eq(dnsRecords.workspaceId, this.#workspaceId), eq(dnsRecords.name, name.toLowerCase()), eq(dnsRecords.type, type));
  }
}

export async function listDnsRecords(db: Db, workspaceId: string): Promise<DnsRecordRow[]> {
  return db.select().from(dnsRecords).where(eq(dnsRecords.workspaceId, workspaceId)).orderBy(asc(dnsRecords.name), asc(dnsRecords.type)).all();
}

function recordOf(row: DnsRecordRow): DnsRecord {
  return { id: row.id, name: row.name, type: row.type as DnsRecordType, content: row.content, ttl: row.ttl, proxied: false, owner: row.owner };
}
