/**
 * Two control-plane processes on one PostgreSQL database, given the same secret-box key
 * file, sign with one key ring: they publish the same keys, and a rotation made through
 * one is what the other lists and signs with. A process given another key refuses to
 * start, naming both keys, instead of signing with keys no agent pinned.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { startTestCluster } from '../helpers/cluster.ts';
import { startTestControlPlane } from '../helpers/control-plane.ts';
import type { TestControlPlane } from '../helpers/control-plane.ts';
import { postgresMissing } from '../helpers/postgres.ts';
import { fileNeeds } from '../helpers/prereq.ts';

interface KeyList {
  items: { key_id: string; state: string }[];
}

if (fileNeeds(postgresMissing())) {
  t.test('processes on one database share the signing key ring', async (t) => {
    const { nodes, databaseUrl, dir: shared } = await startTestCluster(t);
    const [a, b] = nodes as [TestControlPlane, TestControlPlane];

    const list = async (cp: typeof a) => (await cp.api<KeyList>('GET', '/api/admin/signing-keys')).body.items.map((k) => `${k.key_id} ${k.state}`);
    const first = await list(a);
    t.equal(first.length, 1);
    t.same(await list(b), first, 'B publishes the key A made');
    t.equal(a.ctx.keyRing?.active().keyId, b.ctx.keyRing?.active().keyId, 'both sign with it');

    const added = await a.api<{ key_id: string }>('POST', '/api/admin/signing-keys');
    t.equal(added.status, 201);
    t.same(await list(b), [...first, `${added.body.key_id} next`], "B lists A's next key");
    const promoted = await b.api<{ active: string }>('POST', '/api/admin/signing-keys/promote');
    t.equal(promoted.status, 200);
    t.equal(promoted.body.active, added.body.key_id);
    t.match(await list(a), [/ retired$/, `${added.body.key_id} active`], "A lists B's promotion");
    t.equal(a.ctx.keyRing?.active().keyId, added.body.key_id, 'A signs with the promoted key once it re-read the ring');

    const otherKey = join(shared, 'other.key');
    writeFileSync(otherKey, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
    await t.rejects(
      startTestControlPlane({ config: { databaseUrl, secretKeyFile: otherKey } }),
      { message: /sealed under key [0-9a-f]{8}, but .* holds key [0-9a-f]{8}/ },
      'a process given another secret-box key does not start',
    );
    await t.rejects(
      startTestControlPlane({ config: { databaseUrl, secretKeyFile: join(shared, 'missing.key') } }),
      { message: /secret key file .*missing\.key does not exist/ },
    );
  });
}
