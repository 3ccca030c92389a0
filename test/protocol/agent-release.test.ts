import t from 'tap';
import {
  ReplayCache,
  agentUpdateParams,
  commandEnvelopeSchema,
  compareAgentVersions,
  newId,
  pinKeys,
  platformOf,
  releaseSigningBytes,
  signCommand,
  signReleaseManifest,
  verifyCommand,
  verifyReleaseManifest,
} from '@vmkit/protocol';
import type { SigningKeyPair } from '@vmkit/protocol';
import { fixtureKey, messageFixtures, wireFixtures } from '../helpers/fixtures.ts';

const cp = fixtureKey('control_plane');
const attacker = fixtureKey('attacker');
const pin = (...keys: SigningKeyPair[]) => pinKeys(keys.map((k) => ({ key_id: k.keyId, public_key: k.publicKey })));
const body = { version: '0.2.0', platform: 'linux-x64' as const, sha256: 'ab'.repeat(32), size: 110_000_000 };

t.test('versions order by semver precedence', async (t) => {
  const ordered = ['0.0.1', '0.1.0-alpha', '0.1.0-alpha.1', '0.1.0-alpha.beta', '0.1.0-beta.2', '0.1.0-beta.11', '0.1.0-rc.1', '0.1.0', '0.1.1', '0.2.0', '0.10.0', '1.0.0'];
  for (let i = 0; i < ordered.length; i++) {
    for (let j = 0; j < ordered.length; j++) {
      const a = ordered[i] ?? '';
      const b = ordered[j] ?? '';
      t.equal(compareAgentVersions(a, b), Math.sign(i - j), `${a} vs ${b}`);
    }
  }
  t.throws(() => compareAgentVersions('1.0', '1.0.0'), /not a release version: "1.0"/);
  t.throws(() => compareAgentVersions('1.0.0', '01.0.0'), /not a release version/);
});

t.test('the signed bytes are the context line and the canonical JSON a shell script can rebuild with printf', async (t) => {
  t.equal(
    releaseSigningBytes(body).toString('utf8'),
    `vmkit-agent-release-v1\n{"platform":"linux-x64","sha256":"${'ab'.repeat(32)}","size":110000000,"version":"0.2.0"}`,
  );
});

t.test('a signed manifest verifies under the pinned key, and nothing else does', async (t) => {
  const m = signReleaseManifest(cp, body);
  t.same(verifyReleaseManifest(m, pin(cp)), { ok: true, manifest: m });
  for (const [field, value] of [
    ['version', '0.2.1'],
    ['platform', 'linux-arm64'],
    ['sha256', 'cd'.repeat(32)],
    ['size', 110_000_001],
  ] as const) {
    const v = verifyReleaseManifest({ ...m, [field]: value }, pin(cp));
    t.equal(v.ok ? 'ok' : v.reason, 'bad_signature', `changed ${field}`);
  }
  const forged = signReleaseManifest(attacker, body);
  const unknown = verifyReleaseManifest(forged, pin(cp));
  t.equal(unknown.ok ? 'ok' : unknown.reason, 'unknown_key', 'signed by a key that is not pinned');
  const relabelled = verifyReleaseManifest({ ...forged, key_id: cp.keyId }, pin(cp));
  t.equal(relabelled.ok ? 'ok' : relabelled.reason, 'bad_signature', "another key's signature under the pinned key's id");
  const extra = verifyReleaseManifest({ ...m, url: 'https://elsewhere/' }, pin(cp));
  t.equal(extra.ok ? 'ok' : extra.reason, 'malformed', 'an unknown field');
  const big = verifyReleaseManifest({ ...m, size: 600 * 1024 * 1024 }, pin(cp));
  t.equal(big.ok ? 'ok' : big.reason, 'malformed', 'over the 512 MiB bound');
});

t.test('agent.update is a typed, signed command', async (t) => {
  const params = { ...body, url: 'https://cp.example.com/agent/releases/0.2.0/linux-x64/vmkit-agent' };
  const signed = signCommand(cp, { agentId: newId('agent'), type: 'agent.update', params });
  t.equal(commandEnvelopeSchema.safeParse(signed.envelope).success, true);
  t.ok(agentUpdateParams.safeParse({ ...params, allow_downgrade: true }).success, 'allow_downgrade is optional');
  for (const bad of [{ ...params, version: 'latest' }, { ...params, sha256: 'AB'.repeat(32) }, { ...params, size: 0 }, { ...params, command: 'sh' }, { ...params, url: 'not a url' }]) {
    t.notOk(agentUpdateParams.safeParse(bad).success, JSON.stringify(bad).slice(0, 80));
  }
});

t.test('the running platform maps to a release platform', async (t) => {
  t.equal(platformOf('linux', 'x64'), 'linux-x64');
  t.equal(platformOf('linux', 'arm64'), 'linux-arm64');
  t.equal(platformOf('darwin', 'arm64'), undefined);
  t.equal(platformOf('linux', 'ia32'), undefined);
});

t.test('the corpus manifest verifies under the control_plane fixture key and under no other', async (t) => {
  const [fx] = wireFixtures('valid', 'agent_release_manifest');
  t.ok(fx, 'a valid case');
  t.ok(verifyReleaseManifest(fx?.value, pin(cp)).ok);
  const other = verifyReleaseManifest(fx?.value, pin(attacker));
  t.equal(other.ok ? 'ok' : other.reason, 'unknown_key');
});

t.test('the corpus agent.update command verifies under the control_plane fixture key', async (t) => {
  const fx = messageFixtures('valid').find((f) => f.name === 'command-agent-update.json');
  const frame = fx?.frame as { envelope: Record<string, unknown>; signature: string };
  const res = verifyCommand(frame.envelope, frame.signature, { pinnedKeys: pin(cp), selfAgentId: 'agt_01jx4n8rz3q5m7k2p0d6w9b1e1', now: 1_764_000_001_000, seen: new ReplayCache() });
  t.ok(res.ok, 'verified');
  if (res.ok && res.command.type === 'agent.update') t.equal(res.command.params.version, '0.2.0');
  const changed = verifyCommand({ ...frame.envelope, params: { ...(frame.envelope.params as object), url: 'https://evil.example/x' } }, frame.signature, {
    pinnedKeys: pin(cp),
    selfAgentId: 'agt_01jx4n8rz3q5m7k2p0d6w9b1e1',
    now: 1_764_000_001_000,
    seen: new ReplayCache(),
  });
  t.equal(changed.ok ? 'ok' : changed.reason, 'bad_signature', 'another URL breaks the signature');
});
