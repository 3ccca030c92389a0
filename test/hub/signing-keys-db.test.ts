/**
 * The signing key ring in the database, as several control-plane processes on one
 * database share it: each "process" is its own database handle (own pool, own
 * connections) with its own ring, all given the same secret-box key.
 */
import t from 'tap';
import type { Test } from 'tap';
import { randomBytes, sign, verify } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decodePublicKey, generateSigningKeyPair } from '@vmkit/protocol';
import { SecretBox } from '../../control-plane/src/auth/secret-box.ts';
import { closeDatabase, openDatabase } from '../../control-plane/src/db/index.ts';
import type { Db } from '../../control-plane/src/db/index.ts';
import { rawExec, rawRows, sql } from '../../control-plane/src/db/raw.ts';
import { DbKeyRing, signingKeyContext } from '../../control-plane/src/hub/signing-keys-db.ts';
import { createTestDatabase, testDialects } from '../helpers/postgres.ts';
import { prerequisite } from '../helpers/prereq.ts';

const box = new SecretBox(randomBytes(32));

for (const { dialect, skip } of testDialects()) {
  t.test(dialect, { skip: prerequisite(skip) }, async (t) => {
    /** A fresh database and a way to open more handles on it ("processes"). */
    const fresh = async (t: Test): Promise<() => Promise<Db>> => {
      const dir = mkdtempSync(join(tmpdir(), 'vmk-keyring-'));
      t.teardown(() => rmSync(dir, { recursive: true, force: true }));
      let databaseUrl: string | undefined;
      if (dialect === 'postgres') {
        const target = await createTestDatabase();
        t.teardown(() => target.drop());
        databaseUrl = target.url;
      }
      const handles: Db[] = [];
      t.teardown(() => Promise.all(handles.map((h) => closeDatabase(h))));
      await closeDatabase(await openDatabase({ dataDir: dir, databaseUrl })); // migrated once
      return async () => {
        const db = await openDatabase({ dataDir: dir, databaseUrl });
        handles.push(db);
        return db;
      };
    };
    const open = async (t: Test, db: Db, opts: Parameters<typeof DbKeyRing.open>[2] = { refreshMs: 0 }, withBox = box) => {
      const ring = await DbKeyRing.open(db, withBox, opts);
      t.teardown(() => ring.close());
      return ring;
    };

    t.test('processes opening the ring together on an empty database agree on one active key', async (t) => {
      const handle = await fresh(t);
      const dbs = await Promise.all([handle(), handle(), handle()]);
      const rings = await Promise.all(dbs.map((db) => open(t, db)));
      const ids = new Set(rings.map((r) => r.active().keyId));
      t.equal(ids.size, 1, 'one active key for all');
      const rows = await rawRows<{ key_id: string; state: string }>(dbs[0], sql`SELECT key_id, state FROM signing_keys`);
      t.same(rows.map((r) => r.state), ['active'], 'one row');
      // What one process signs, every other verifies with the key it publishes.
      const [a, b] = rings as [DbKeyRing, DbKeyRing];
      const message = Buffer.from('a command');
      const signature = sign(null, message, a.active().privateKey);
      t.same(b.published(), a.published());
      const published = b.published()[0];
      t.ok(published && verify(null, message, decodePublicKey(published.public_key), signature), 'b verifies what a signed');
    });

    t.test('the private half is stored sealed, bound to its key id, and opens only with the same secret-box key', async (t) => {
      const handle = await fresh(t);
      const db = await handle();
      const ring = await open(t, db);
      const [row] = await rawRows<{ key_id: string; sealed_private_key: string }>(db, sql`SELECT key_id, sealed_private_key FROM signing_keys`);
      t.notMatch(row?.sealed_private_key ?? '', /PRIVATE KEY/, 'no PEM in the database');
      t.match(row?.sealed_private_key ?? '', new RegExp(`^v1\\.${box.keyId}\\.`));
      t.match(box.open(row?.sealed_private_key ?? '', signingKeyContext(ring.active().keyId)), /BEGIN PRIVATE KEY/);

      const other = new SecretBox(randomBytes(32));
      await t.rejects(DbKeyRing.open(await handle(), other, { refreshMs: 0 }), {
        message: new RegExp(`sealed under key ${box.keyId}.*holds key ${other.keyId}`),
      }, 'a process given another secret-box key fails at start, naming both keys');

      // A sealed key copied onto another row does not open there.
      const stray = generateSigningKeyPair();
      await rawExec(
        db,
        sql`INSERT INTO signing_keys (key_id, public_key, state, sealed_private_key, created_at, retired_at) VALUES (${stray.keyId}, ${stray.publicKey}, 'retired', ${row?.sealed_private_key ?? ''}, ${Date.now()}, ${Date.now()})`,
      );
      await t.rejects(ring.refresh(), { message: /integrity check/ });
    });

    t.test('a rotation made through one process is signed with by the others after a refresh', async (t) => {
      const handle = await fresh(t);
      const a = await open(t, await handle());
      const b = await open(t, await handle());
      const first = a.active().keyId;
      const next = await a.addNext();
      t.same(a.published().map((k) => k.key_id), [first, next.keyId], 'a publishes active then next');
      t.same(b.published().map((k) => k.key_id), [first], 'b has not looked yet');
      await b.refresh();
      t.same(b.published().map((k) => k.key_id), [first, next.keyId]);
      await t.rejects(Promise.resolve().then(() => b.addNext()), { message: /a next key already exists/ }, 'b cannot add a second next key');

      const promoted = await b.promoteNext();
      t.same(promoted, { active: next.keyId, retired: first });
      t.equal(a.active().keyId, first, 'a still signs with the old key until it refreshes');
      await a.refresh();
      t.equal(a.active().keyId, next.keyId);
      t.same(a.retiredIds(), [first]);
      t.ok(a.get(first), 'a retired key keeps its private half (catch-up of offline agents)');
      await t.rejects(Promise.resolve().then(() => a.promoteNext()), { message: /no next key to promote/ });
    });

    t.test('two processes adding a next key at once make one', async (t) => {
      const handle = await fresh(t);
      const [a, b] = await Promise.all([open(t, await handle()), open(t, await handle())]);
      const results = await Promise.allSettled([a.addNext(), b.addNext()]);
      t.equal(results.filter((r) => r.status === 'fulfilled').length, 1, 'one added');
      t.match(results.find((r) => r.status === 'rejected'), { reason: { message: /a next key already exists/ } });
      const rows = await rawRows<{ state: string }>(await handle(), sql`SELECT state FROM signing_keys WHERE state = 'next'`);
      t.equal(rows.length, 1);
    });

    t.test('the ring re-reads itself on its timer', async (t) => {
      const handle = await fresh(t);
      const a = await open(t, await handle());
      const b = await open(t, await handle(), { refreshMs: 50 });
      const next = await a.addNext();
      await a.promoteNext();
      // Wait for b's own timer to pick it up (no refresh() called here).
      while (b.active().keyId !== next.keyId) await new Promise((r) => setTimeout(r, 20));
      t.equal(b.active().keyId, next.keyId);
    });

    t.test('a re-read that fails is reported, and the ring keeps signing with the keys it read', async (t) => {
      const handle = await fresh(t);
      const db = await handle();
      let reported: (err: unknown) => void = () => undefined;
      const failed = new Promise<unknown>((resolve) => (reported = resolve));
      const ring = await open(t, db, { refreshMs: 20, onRefreshError: (err) => reported(err) });
      const before = ring.active().keyId;
      await closeDatabase(db); // every later read fails
      const keepAlive = setInterval(() => undefined, 1_000); // the ring's timer is unref'd
      const err = await failed;
      clearInterval(keepAlive);
      t.ok(err instanceof Error, `the failure is handed over: ${String(err)}`);
      t.equal(ring.active().keyId, before, 'still signs with the active key');
    });

    t.test('a deployment that had a file ring keeps its active key', async (t) => {
      const handle = await fresh(t);
      const mine = generateSigningKeyPair();
      const ring = await open(t, await handle(), { refreshMs: 0, adopt: mine });
      t.equal(ring.active().keyId, mine.keyId);
      const later = await open(t, await handle(), { refreshMs: 0, adopt: generateSigningKeyPair() });
      t.equal(later.active().keyId, mine.keyId, 'only an empty ring adopts');
    });
  });
}
