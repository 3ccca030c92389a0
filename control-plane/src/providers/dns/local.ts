import { randomUUID } from 'node:crypto';
import { DnsError, hostFor } from './types.ts';
import type { DnsProvider, DnsRecord, DnsRecordSpec, DnsRecordType, UpsertedDnsRecord } from './types.ts';

/**
 * Where the `local` DNS provider keeps its records: a port the data layer implements
 * (a table listed by the API), with an in-memory implementation for tests and for a
 * control plane that has not wired one. Records here are all VMKit's own.
 */
export interface DnsRecordStore {
  get(name: string, type: DnsRecordType): Promise<DnsRecord | null>;
  put(record: DnsRecord): Promise<void>;
  delete(name: string, type: DnsRecordType): Promise<void>;
  list(): Promise<DnsRecord[]>;
}

export class MemoryDnsRecordStore implements DnsRecordStore {
  readonly #records = new Map<string, DnsRecord>();

  get(name: string, type: DnsRecordType): Promise<DnsRecord | null> {
    return Promise.resolve(this.#records.get(`${type} ${name}`) ?? null);
  }

  put(record: DnsRecord): Promise<void> {
    this.#records.set(`${record.type} ${record.name}`, { ...record });
    return Promise.resolve();
  }

  delete(name: string, type: DnsRecordType): Promise<void> {
    this.#records.delete(`${type} ${name}`);
    return Promise.resolve();
  }

  list(): Promise<DnsRecord[]> {
    return Promise.resolve([...this.#records.values()].map((r) => ({ ...r })));
  }
}

/** `.internal` is reserved for private use (ICANN, 2024): never a real public name. */
export const DEFAULT_LOCAL_ZONE = 'vmkit.internal';

/**
 * The `local` DNS provider: the control plane's own record book, for the embedded
 * single-machine setup where the VM is a local sandbox and nothing public resolves.
 * Same rules as a real provider: one owner per name, idempotent upsert.
 */
export class LocalDnsProvider implements DnsProvider {
  readonly name = 'local';
  readonly zone: string;
  readonly store: DnsRecordStore;

  constructor(opts: { zone?: string; store?: DnsRecordStore } = {}) {
    this.zone = opts.zone ?? DEFAULT_LOCAL_ZONE;
    hostFor('a', 'b', this.zone); // validates the zone
    this.store = opts.store ?? new MemoryDnsRecordStore();
  }

  async upsert(spec: DnsRecordSpec): Promise<UpsertedDnsRecord> {
    checkInZone(spec.name, this.zone);
    const ttl = spec.ttl ?? 60;
    const existing = await this.store.get(spec.name, spec.type);
    if (existing && existing.owner !== spec.owner) {
      throw new DnsError('dns_record_conflict', `${spec.type} ${spec.name} belongs to ${existing.owner ?? 'someone else'}, not ${spec.owner}; VMKit does not change it.`);
    }
    if (existing && existing.content === spec.content && existing.ttl === ttl) return { ...existing, outcome: 'unchanged' };
    const record: DnsRecord = { id: existing?.id ?? randomUUID(), name: spec.name, type: spec.type, content: spec.content, ttl, proxied: false, owner: spec.owner };
    await this.store.put(record);
    return { ...record, outcome: existing ? 'updated' : 'created' };
  }

  find(name: string, type: DnsRecordType): Promise<DnsRecord | null> {
    return this.store.get(name, type);
  }

  async remove(name: string, type: DnsRecordType, owner: string): Promise<void> {
    const existing = await this.store.get(name, type);
    if (!existing) return;
    if (existing.owner !== owner) throw new DnsError('dns_record_conflict', `${type} ${name} belongs to ${existing.owner ?? 'someone else'}, not ${owner}; VMKit does not remove it.`);
    await this.store.delete(name, type);
  }
}

export function checkInZone(name: string, zone: string): void {
  if (!name.endsWith(`.${zone}`)) throw new DnsError('invalid_request', `${name} is not a name in the zone ${zone}.`);
}
