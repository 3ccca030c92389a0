import t from 'tap';
import type { Test } from 'tap';
import { CloudflareDnsProvider } from '../../control-plane/src/providers/dns/cloudflare.ts';
import type { CloudflareDnsOptions } from '../../control-plane/src/providers/dns/cloudflare.ts';
import { LocalDnsProvider, MemoryDnsRecordStore } from '../../control-plane/src/providers/dns/local.ts';
import { hostFor, markerFor } from '../../control-plane/src/providers/dns/types.ts';
import { FakeCloudflare } from '../helpers/fake-cloudflare.ts';

const TOKEN = 'cf-test-token-0123456789abcdefghijklmnopqr';
const ZONE_ID = '023e105f4ecef8ad9ca31a8372d0c353';
const ZONE = 'example.com';
const ENV = 'env_01jx4n9abcdefghjkmnpqrstvw';
const HOST = 'shop-staging.example.com';

async function setup(t: Test, opts: Partial<CloudflareDnsOptions> = {}): Promise<{ fake: FakeCloudflare; dns: CloudflareDnsProvider }> {
  const fake = await FakeCloudflare.start({ token: TOKEN, zoneId: ZONE_ID, zoneName: ZONE });
  t.teardown(() => fake.close());
  const dns = new CloudflareDnsProvider({ apiToken: TOKEN, zoneId: ZONE_ID, zoneName: ZONE, baseUrl: fake.url, ...opts });
  return { fake, dns };
}

const writes = (fake: FakeCloudflare): string[] => fake.requests.filter((r) => r.method !== 'GET').map((r) => `${r.method} ${r.status}`);

t.test('the record name is <app>-<dest>.<zone>, DNS-safe', async (t) => {
  t.equal(hostFor('shop', 'staging', ZONE), HOST);
  t.equal(hostFor('My_Shop', 'EU West', 'Example.COM.'), 'my-shop-eu-west.example.com');
  const long = hostFor('a'.repeat(60), 'production', ZONE);
  t.ok(long.split('.')[0]!.length <= 63, 'a long name is cut to one DNS label');
  t.not(long, hostFor(`${'a'.repeat(60)}x`, 'production', ZONE), 'two long names stay apart');
  t.throws(() => hostFor('shop', 'staging', 'not a zone'), { name: 'DnsError', key: 'invalid_request' });
});

t.test('a new environment gets an A record with VMKit marker, not proxied', async (t) => {
  const { fake, dns } = await setup(t);
  const rec = await dns.upsert({ name: HOST, type: 'A', content: '203.0.113.10', owner: ENV });
  t.equal(rec.outcome, 'created');
  t.same(
    fake.records().map((r) => ({ name: r.name, type: r.type, content: r.content, proxied: r.proxied, comment: r.comment })),
    [{ name: HOST, type: 'A', content: '203.0.113.10', proxied: false, comment: markerFor(ENV) }],
  );
  const lookup = fake.requests[0];
  t.equal(lookup?.method, 'GET');
  t.match(lookup?.path, /name=shop-staging\.example\.com&type=A/, 'looked up by name and type first');
});

t.test('the same upsert again changes nothing', async (t) => {
  const { fake, dns } = await setup(t);
  await dns.upsert({ name: HOST, type: 'A', content: '203.0.113.10', owner: ENV });
  const again = await dns.upsert({ name: HOST, type: 'A', content: '203.0.113.10', owner: ENV });
  t.equal(again.outcome, 'unchanged');
  t.same(writes(fake), ['POST 200'], 'one POST in all');
});

t.test("a new VM address updates VMKit's record in place", async (t) => {
  const { fake, dns } = await setup(t);
  const first = await dns.upsert({ name: HOST, type: 'A', content: '203.0.113.10', owner: ENV });
  const moved = await dns.upsert({ name: HOST, type: 'A', content: '203.0.113.20', owner: ENV });
  t.equal(moved.outcome, 'updated');
  t.equal(moved.id, first.id);
  t.same(fake.records().map((r) => r.content), ['203.0.113.20']);
  t.same(writes(fake), ['POST 200', 'PATCH 200']);
});

t.test("a record VMKit did not create is refused and left as it is", async (t) => {
  const { fake, dns } = await setup(t);
  fake.addRecord({ name: HOST, type: 'A', content: '198.51.100.7', comment: 'marketing site' });
  await t.rejects(dns.upsert({ name: HOST, type: 'A', content: '203.0.113.10', owner: ENV }), {
    name: 'DnsError',
    key: 'dns_record_conflict',
    message: /VMKit did not create it.*will not change it/,
  });
  await t.rejects(dns.remove(HOST, 'A', ENV), { key: 'dns_record_conflict', message: /will not remove it/ });
  t.same(writes(fake), [], 'no write reached Cloudflare');
  t.equal(fake.records()[0]?.content, '198.51.100.7');
});

t.test("VMKit's record for another environment is not taken over", async (t) => {
  const { fake, dns } = await setup(t);
  fake.addRecord({ name: HOST, type: 'A', content: '198.51.100.7', comment: markerFor('env_other') });
  await t.rejects(dns.upsert({ name: HOST, type: 'A', content: '203.0.113.10', owner: ENV }), { key: 'dns_record_conflict', message: /record for env_other/ });
  t.same(writes(fake), []);
});

t.test('"an identical record already exists" (81058) means look it up and reuse it', async (t) => {
  const { fake, dns } = await setup(t);
  // Another worker of this deploy created the record between our lookup and our POST.
  fake.beforeNextPost = () => void fake.addRecord({ name: HOST, type: 'A', content: '203.0.113.10', comment: markerFor(ENV), ttl: 60 });
  const rec = await dns.upsert({ name: HOST, type: 'A', content: '203.0.113.10', owner: ENV });
  t.equal(rec.outcome, 'unchanged');
  t.equal(fake.records().length, 1);
  t.same(fake.requests.map((r) => `${r.method} ${r.status}`), ['GET 200', 'POST 400', 'GET 200']);
});

t.test('81058 over a record someone else made is still a conflict', async (t) => {
  const { fake, dns } = await setup(t);
  fake.beforeNextPost = () => void fake.addRecord({ name: HOST, type: 'A', content: '203.0.113.10' });
  await t.rejects(dns.upsert({ name: HOST, type: 'A', content: '203.0.113.10', owner: ENV }), { name: 'DnsError', key: 'dns_record_conflict' });
});

t.test("remove deletes VMKit's record; removing again succeeds", async (t) => {
  const { fake, dns } = await setup(t);
  await dns.upsert({ name: HOST, type: 'A', content: '203.0.113.10', owner: ENV });
  await dns.remove(HOST, 'A', ENV);
  t.same(fake.records(), []);
  await dns.remove(HOST, 'A', ENV);
  t.equal(await dns.find(HOST, 'A'), null);
});

t.test('a token without DNS edit rights says which permission it needs', async (t) => {
  const { fake } = await setup(t);
  const dns = new CloudflareDnsProvider({ apiToken: 'wrong', zoneId: ZONE_ID, zoneName: ZONE, baseUrl: fake.url });
  await t.rejects(dns.upsert({ name: HOST, type: 'A', content: '203.0.113.10', owner: ENV }), {
    key: 'provider_auth_failed',
    message: /10000 Authentication error.*Zone → DNS → Edit/,
  });
});

t.test('a wrong zone id is named as such', async (t) => {
  const { fake } = await setup(t);
  const dns = new CloudflareDnsProvider({ apiToken: TOKEN, zoneId: 'ffffffffffffffffffffffffffffffff', zoneName: ZONE, baseUrl: fake.url });
  await t.rejects(dns.find(HOST, 'A'), { key: 'dns_failed', message: /7003.*Check the zone id/ });
});

t.test('an address Cloudflare refuses comes back with its code', async (t) => {
  const { dns } = await setup(t);
  await t.rejects(dns.upsert({ name: HOST, type: 'A', content: '2001:db8::1', owner: ENV }), { key: 'dns_failed', message: /9005 Content for A record is invalid/ });
});

t.test('a name outside the zone is refused before any request', async (t) => {
  const { fake, dns } = await setup(t);
  await t.rejects(dns.upsert({ name: 'shop.example.org', type: 'A', content: '203.0.113.10', owner: ENV }), { name: 'DnsError', key: 'invalid_request' });
  t.equal(fake.requests.length, 0);
});

t.test('a 429 is retried after its Retry-After', async (t) => {
  const { fake, dns } = await setup(t);
  fake.throttle = { count: 1, retryAfterSec: 1 };
  const rec = await dns.upsert({ name: HOST, type: 'A', content: '203.0.113.10', owner: ENV });
  t.equal(rec.outcome, 'created');
  const [first, second] = fake.requests;
  t.equal(first?.status, 429);
  t.ok((second?.atMs ?? 0) - (first?.atMs ?? 0) >= 1000, 'the retry waited the advertised second');
});

t.test('a rate limit that does not lift is provider_rate_limited', async (t) => {
  const { fake, dns } = await setup(t, { maxRetries: 1, sleep: async () => undefined });
  fake.throttle = { count: 5, retryAfterSec: 30 };
  await t.rejects(dns.find(HOST, 'A'), { key: 'provider_rate_limited', message: /Cloudflare's API rate limit is exhausted/ });
  t.equal(fake.requests.length, 2);
});

t.test('local DNS: created, unchanged, updated, and one owner per name', async (t) => {
  const store = new MemoryDnsRecordStore();
  const dns = new LocalDnsProvider({ store });
  const host = hostFor('shop', 'staging', dns.zone);
  t.equal(host, 'shop-staging.vmkit.internal');
  t.equal((await dns.upsert({ name: host, type: 'A', content: '10.201.0.2', owner: ENV })).outcome, 'created');
  t.equal((await dns.upsert({ name: host, type: 'A', content: '10.201.0.2', owner: ENV })).outcome, 'unchanged');
  t.equal((await dns.upsert({ name: host, type: 'A', content: '10.201.0.6', owner: ENV })).outcome, 'updated');
  await t.rejects(dns.upsert({ name: host, type: 'A', content: '10.201.0.9', owner: 'env_other' }), { name: 'DnsError', key: 'dns_record_conflict' });
  t.same((await store.list()).map((r) => [r.name, r.content, r.owner]), [[host, '10.201.0.6', ENV]], 'the store lists what the API will show');
  await t.rejects(dns.remove(host, 'A', 'env_other'), { name: 'DnsError', key: 'dns_record_conflict' });
  await dns.remove(host, 'A', ENV);
  await dns.remove(host, 'A', ENV);
  t.same(await store.list(), []);
});
