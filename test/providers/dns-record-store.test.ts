import t from 'tap';
import type { Test } from 'tap';
import { DbDnsRecordStore } from '../../control-plane/src/db/dns-records.ts';
import { createWorkspace } from '../../control-plane/src/db/workspaces.ts';
import { LocalDnsProvider, MemoryDnsRecordStore } from '../../control-plane/src/providers/dns/local.ts';
import type { DnsRecordStore } from '../../control-plane/src/providers/dns/local.ts';
import { testDialects } from '../helpers/postgres.ts';
import { prerequisite } from '../helpers/prereq.ts';
import type { Missing } from '../helpers/prereq.ts';
import { openTestDatabase } from '../helpers/test-db.ts';

const ZONE = 'vmkit.internal';
const HOST = 'shop-staging.vmkit.internal';
const ENV = 'env_01jx4n9abcdefghjkmnpqrstvw';


/** The same behaviours for the in-memory store and the database ones: the provider cannot tell them apart. */
const STORES: [string, (t: Test) => Promise<DnsRecordStore>, Missing][] = [
  ['in memory', () => Promise.resolve(new MemoryDnsRecordStore()), false],
  ...testDialects().map(({ dialect, skip }): [string, (t: Test) => Promise<DnsRecordStore>, Missing] => [
    `in the ${dialect} database`,
    async (t) => {
      const db = await openTestDatabase(t, dialect);
      return new DbDnsRecordStore(db, (await createWorkspace(db, 'ws')).id, ZONE);
    },
    skip,
  ]),
];

for (const [where, makeStore, missing] of STORES) {
  t.test(`local DNS ${where}: an upsert is idempotent and keeps the record's id`, { skip: prerequisite(missing) }, async (t) => {
    const store = await makeStore(t);
    const dns = new LocalDnsProvider({ zone: ZONE, store });
    const created = await dns.upsert({ name: HOST, type: 'A', content: '10.201.0.2', owner: ENV });
    t.equal(created.outcome, 'created');
    const again = await dns.upsert({ name: HOST, type: 'A', content: '10.201.0.2', owner: ENV });
    t.equal(again.outcome, 'unchanged');
    t.equal(again.id, created.id);
    const moved = await dns.upsert({ name: HOST, type: 'A', content: '10.201.0.6', owner: ENV, ttl: 120 });
    t.equal(moved.outcome, 'updated');
    t.equal(moved.id, created.id, 'an update keeps the id');
    t.match(await dns.find(HOST, 'A'), { id: created.id, content: '10.201.0.6', ttl: 120, owner: ENV, proxied: false });
    t.same((await store.list()).map((r) => [r.name, r.type, r.content]), [[HOST, 'A', '10.201.0.6']], 'one record');
  });

  t.test(`local DNS ${where}: one owner per name; the other owner cannot change or remove it`, { skip: prerequisite(missing) }, async (t) => {
    const store = await makeStore(t);
    const dns = new LocalDnsProvider({ zone: ZONE, store });
    await dns.upsert({ name: HOST, type: 'A', content: '10.201.0.2', owner: ENV });
    await t.rejects(dns.upsert({ name: HOST, type: 'A', content: '10.201.0.9', owner: 'env_other' }), { name: 'DnsError', key: 'dns_record_conflict' });
    await t.rejects(dns.remove(HOST, 'A', 'env_other'), { name: 'DnsError', key: 'dns_record_conflict' });
    t.equal((await dns.find(HOST, 'A'))?.content, '10.201.0.2', 'left as it was');
    await dns.upsert({ name: HOST, type: 'AAAA', content: 'fd00::2', owner: 'env_other' });
    t.equal((await store.list()).length, 2, 'A and AAAA of one name are two records');
    await dns.remove(HOST, 'A', ENV);
    await dns.remove(HOST, 'A', ENV);
    t.same((await store.list()).map((r) => r.type), ['AAAA'], 'removing twice is fine');
  });
}

t.test('the database store keeps each workspace to its own records', async (t) => {
  const db = await openTestDatabase(t, 'sqlite');
  const a = await createWorkspace(db, 'a');
  const b = await createWorkspace(db, 'b');
  const dnsA = new LocalDnsProvider({ zone: ZONE, store: new DbDnsRecordStore(db, a.id, ZONE) });
  const dnsB = new LocalDnsProvider({ zone: ZONE, store: new DbDnsRecordStore(db, b.id, ZONE) });
  await dnsA.upsert({ name: HOST, type: 'A', content: '10.0.0.1', owner: ENV });
  t.equal(await dnsB.find(HOST, 'A'), null);
  t.equal((await dnsB.upsert({ name: HOST, type: 'A', content: '10.0.0.2', owner: 'env_b' })).outcome, 'created', 'the same name in another workspace is its own record');
  await dnsB.remove(HOST, 'A', 'env_b');
  t.equal((await dnsA.find(HOST, 'A'))?.content, '10.0.0.1', "b's removal did not touch a's record");
});
