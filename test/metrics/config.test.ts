// --node-id and --metrics-listen: flags over environment, and a clear error for bad values.
import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig } from '../../control-plane/src/config.ts';
import { NODE_ID_FILE, resolveNodeId } from '../../control-plane/src/node-id.ts';

t.test('--metrics-listen takes host:port, [v6]:port; the default is no second listener', async (t) => {
  t.equal(loadConfig([], {}).metricsListen, null);
  t.same(loadConfig(['--metrics-listen', '127.0.0.1:9464'], {}).metricsListen, { host: '127.0.0.1', port: 9464 });
  t.same(loadConfig([], { VMKIT_METRICS_LISTEN: '[::1]:9464' }).metricsListen, { host: '::1', port: 9464 });
  t.same(loadConfig(['--metrics-listen', '10.0.0.5:9100'], { VMKIT_METRICS_LISTEN: '[::1]:9464' }).metricsListen, { host: '10.0.0.5', port: 9100 }, 'the flag wins');
  for (const bad of ['9464', '127.0.0.1', '127.0.0.1:', 'host:99999', 'a b:1', '::1:9464']) {
    t.throws(() => loadConfig(['--metrics-listen', bad], {}), ConfigError, bad);
  }
  t.throws(() => loadConfig(['--metrics-listen', 'x'], {}), { message: 'metrics listen address must be host:port (e.g. 127.0.0.1:9464), got "x"' });
});

t.test('--node-id / VMKIT_NODE_ID: a label-safe name, else a clear error', async (t) => {
  t.equal(loadConfig([], {}).nodeId, undefined, 'by default the data dir keeps one');
  t.equal(loadConfig(['--node-id', 'cp-east.1'], {}).nodeId, 'cp-east.1');
  t.equal(loadConfig([], { VMKIT_NODE_ID: 'cp_2' }).nodeId, 'cp_2');
  for (const bad of ['-lead', 'has space', 'quo"te', 'x'.repeat(64), 'é']) {
    t.throws(() => loadConfig(['--node-id', bad], {}), ConfigError, bad);
  }
});

t.test('the node id file: made once (0600), read back, never silently replaced', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'vmkit-node-id-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const made = resolveNodeId(dir, undefined);
  t.equal(made.created, true);
  t.match(made.nodeId, /^[A-Za-z0-9][A-Za-z0-9._-]*-[0-9a-f]{6}$/);
  t.equal(statSync(join(dir, NODE_ID_FILE)).mode & 0o777, 0o600);
  t.same(resolveNodeId(dir, undefined), { nodeId: made.nodeId, created: false });
  t.same(resolveNodeId(dir, 'given'), { nodeId: 'given', created: false }, 'a given id wins over the file');
  t.equal(readFileSync(join(dir, NODE_ID_FILE), 'utf8').trim(), made.nodeId, 'and does not overwrite it');
  writeFileSync(join(dir, NODE_ID_FILE), 'not valid!\n');
  t.throws(() => resolveNodeId(dir, undefined), /does not hold a valid node id/);
});
