import t from 'tap';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newId } from '@vmkit/protocol';
import { SecretBox } from '../../control-plane/src/auth/secret-box.ts';
import { createWorkspace } from '../../control-plane/src/db/workspaces.ts';
import { DeployKeyStore } from '../../control-plane/src/services/harden/deploy-keys.ts';
import { testDialects } from '../helpers/postgres.ts';
import { prerequisite } from '../helpers/prereq.ts';
import { openTestDatabase } from '../helpers/test-db.ts';

t.test('parallel first uses of a workspace get one deploy key, kept 0600 and read back after a restart', async (t) => {
  const dataDir = mkdtempSync(join(tmpdir(), 'vmkit-keys-'));
  t.teardown(() => rmSync(dataDir, { recursive: true, force: true }));
  const ws = newId('workspace');
  const store = new DeployKeyStore(dataDir);
  const keys = await Promise.all(Array.from({ length: 6 }, () => store.get(ws)));
  t.equal(new Set(keys.map((k) => k.publicKey)).size, 1, 'one key for all six');
  t.equal(statSync(join(dataDir, 'deploy-keys', ws)).mode & 0o777, 0o600);
  const again = await new DeployKeyStore(dataDir).get(ws);
  t.equal(again.publicKey, keys[0]?.publicKey, 'a new process reads the same key');
  await t.rejects(store.get('not-a-workspace'), TypeError);
});

// Several control-plane processes on one database: one pair per workspace, whichever process asks.
for (const { dialect, skip } of testDialects()) {
  t.test(`${dialect}: stores of several processes on one database share one sealed pair per workspace`, { skip: prerequisite(skip) }, async (t) => {
    const db = await openTestDatabase(t, dialect);
    const dirs = [0, 1, 2].map(() => mkdtempSync(join(tmpdir(), 'vmkit-keys-')));
    t.teardown(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
    const box = new SecretBox(randomBytes(32));
    const ws = (await createWorkspace(db, 'shared')).id;
    const stores = dirs.map((d) => new DeployKeyStore(d, { db, box }));
    // Parallel first uses on every "process": one row wins, every one uses it.
    const keys = await Promise.all(stores.flatMap((s) => [s.get(ws), s.get(ws)]));
    t.equal(new Set(keys.map((k) => k.publicKey)).size, 1, 'one public key for all');
    t.equal(new Set(keys.map((k) => k.privateKey)).size, 1, 'and one private key');
    t.ok(keys[0]?.privateKey.includes('OPENSSH PRIVATE KEY'), 'an OpenSSH private key');
    t.notOk(existsSync(join(dirs[0] ?? '', 'deploy-keys', ws)), 'no file is written');
    const row = (await db.orm.select().from(db.t.deployKeys)).find((r) => r.workspaceId === ws);
    t.equal(row?.publicKey, keys[0]?.publicKey);
    t.notMatch(row?.sealedPrivateKey ?? '', /PRIVATE KEY/, 'the private half is sealed in the row');
    const later = await new DeployKeyStore(dirs[2] ?? '', { db, box }).get(ws);
    t.same(later, keys[0], 'a restarted process reads the same pair');
    await t.rejects(new DeployKeyStore(dirs[2] ?? '', { db, box: new SecretBox(randomBytes(32)) }).get(ws), 'a process with another secret-box key cannot open it');

    // A data dir that had a file pair (one process before) brings it along: its VMs trust it.
    const ws2 = (await createWorkspace(db, 'legacy')).id;
    const legacy = await new DeployKeyStore(dirs[1] ?? '').get(ws2);
    const adopted = await new DeployKeyStore(dirs[1] ?? '', { db, box }).get(ws2);
    t.same(adopted, legacy, "the file pair becomes the workspace's shared pair");
    t.same(await new DeployKeyStore(dirs[0] ?? '', { db, box }).get(ws2), legacy, 'which another process reads');
    t.notSame((await stores[0]?.get(ws))?.publicKey, legacy.publicKey, 'each workspace its own pair');
  });
}
