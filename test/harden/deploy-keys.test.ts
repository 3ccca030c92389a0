import t from 'tap';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { newId } from '@vmkit/protocol';
import { DeployKeyStore } from '../../control-plane/src/services/harden/deploy-keys.ts';

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
