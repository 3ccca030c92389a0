import t from 'tap';
import fc from 'fast-check';
import {
  COMMAND_BATCH_SIGNING_CONTEXT,
  MAX_BATCH_PROOF_HASHES,
  MAX_BATCH_SIZE,
  ReplayCache,
  batchSigningBytes,
  canonicalJson,
  commandSigningBytes,
  merkleLeafHash,
  merkleTree,
  newId,
  pinKeys,
  prepareCommand,
  signCommand,
  signCommandBatch,
  signCommandText,
  verifyCommand,
} from '@vmkit/protocol';
import type { CommandBatch, CommandEnvelope, SigningKeyPair, VerifyOptions } from '@vmkit/protocol';
import { sign } from 'node:crypto';
import { fixtureKey } from '../helpers/fixtures.ts';

const cp = fixtureKey('control_plane');
const next = fixtureKey('control_plane_next');
const attacker = fixtureKey('attacker');
const NOW = 1_764_000_000_000;

const pin = (...keys: SigningKeyPair[]) => pinKeys(keys.map((k) => ({ key_id: k.keyId, public_key: k.publicKey })));
const optsFor = (agentId: string, over: Partial<VerifyOptions> = {}): VerifyOptions => ({
  pinnedKeys: pin(cp),
  selfAgentId: agentId,
  now: NOW + 1000,
  seen: new ReplayCache(),
  ...over,
});
const reason = (r: ReturnType<typeof verifyCommand>) => (r.ok ? 'ok' : r.reason);

interface BatchSigned {
  envelope: CommandEnvelope;
  signature: string;
  batch: CommandBatch;
}

/** n pings to n agents, signed as one batch by `key` (the way the hub does). */
function batchOf(n: number, key = cp, signer = key): BatchSigned[] {
  const prepared = Array.from({ length: n }, () => prepareCommand(key, { agentId: newId('agent'), type: 'ping', params: {}, now: NOW }));
  const { signature, batches } = signCommandBatch(
    signer.privateKey,
    prepared.map((p) => commandSigningBytes(p.canonical)),
  );
  return prepared.map((p, i) => ({ envelope: p.envelope, signature, batch: batches[i] as CommandBatch }));
}
const verifyOne = (c: BatchSigned, batch: unknown = c.batch, over: Partial<VerifyOptions> = {}) =>
  verifyCommand(c.envelope, c.signature, optsFor(c.envelope.agent_id, over), batch);

t.test('every command of a batch verifies with its place and the one shared signature', async (t) => {
  for (const n of [1, 2, 3, 7, 64, 100, 1024]) {
    const batch = batchOf(n);
    t.equal(new Set(batch.map((c) => c.signature)).size, 1, `${n}: one signature`);
    const verdicts = batch.map((c) => verifyOne(c));
    t.ok(verdicts.every((v) => v.ok), `${n}: all ${n} verify`);
    t.ok(batch.every((c, i) => c.batch.index === i && c.batch.size === n), `${n}: each knows its place`);
    t.ok(Math.max(...batch.map((c) => c.batch.proof.length)) <= Math.ceil(Math.log2(n)), `${n}: paths of at most log2(n) hashes`);
  }
});

t.test('the batch signature signs the RFC 9162 root of the commands\' signing bytes, with the size, in its own context', async (t) => {
  const batch = batchOf(5);
  const leaves = batch.map((c) => merkleLeafHash(commandSigningBytes(canonicalJson(c.envelope))));
  const root = merkleTree(leaves).root;
  const expected = sign(null, Buffer.concat([Buffer.from(`vmkit-command-batch-v1\n5\n`), root]), cp.privateKey).toString('base64url');
  t.equal(batch[0]?.signature, expected, 'Ed25519 over "vmkit-command-batch-v1\\n" + "5" + "\\n" + root');
  t.equal(COMMAND_BATCH_SIGNING_CONTEXT, 'vmkit-command-batch-v1\n');
  t.same(batchSigningBytes(5, root), Buffer.concat([Buffer.from('vmkit-command-batch-v1\n5\n'), root]));
});

t.test('context separation: a single signature is no batch signature over the same bytes, and the other way round', async (t) => {
  const single = signCommand(cp, { agentId: newId('agent'), type: 'ping', params: {}, now: NOW });
  const asSingle = { envelope: single.envelope, signature: single.signature };
  t.equal(reason(verifyCommand(single.envelope, single.signature, optsFor(single.envelope.agent_id))), 'ok', 'the single signature verifies singly');
  t.equal(
    reason(verifyCommand(asSingle.envelope, asSingle.signature, optsFor(single.envelope.agent_id), { index: 0, size: 1, proof: [] })),
    'bad_signature',
    'the single signature, claimed as a batch of one (whose root covers the same bytes), is refused',
  );
  const [one] = batchOf(1);
  if (!one) throw new Error('no batch');
  t.equal(reason(verifyOne(one)), 'ok', 'the batch of one verifies as a batch');
  const unbatched = (c: BatchSigned) => verifyCommand(c.envelope, c.signature, optsFor(c.envelope.agent_id));
  t.equal(reason(unbatched(one)), 'bad_signature', 'its signature without the batch field is refused');
  for (const c of batchOf(4)) t.equal(reason(unbatched(c)), 'bad_signature', `a batch member's signature is no single signature (${c.batch.index})`);
  // The two contexts: neither signed text is a prefix of the other's.
  const leaf = commandSigningBytes(canonicalJson(single.envelope));
  const batchBytes = batchSigningBytes(1, merkleLeafHash(leaf));
  t.notOk(leaf.subarray(0, batchBytes.length).equals(batchBytes) || batchBytes.subarray(0, leaf.length).equals(leaf), 'different prefixes');
  t.not(signCommandText(cp.privateKey, canonicalJson(single.envelope)), sign(null, batchBytes, cp.privateKey).toString('base64url'));
});

t.test('wrong or unknown key: a batch signed by a key other than the one the envelopes name is refused', async (t) => {
  for (const c of batchOf(3, cp, attacker)) t.equal(reason(verifyOne(c)), 'bad_signature', 'signed by the attacker, naming the pinned key');
  for (const c of batchOf(3, attacker)) t.equal(reason(verifyOne(c)), 'unknown_key', 'naming a key that is not pinned');
  for (const c of batchOf(3, next)) {
    t.equal(reason(verifyOne(c)), 'unknown_key', 'the next key before it is pinned');
    t.equal(reason(verifyOne(c, c.batch, { pinnedKeys: pin(cp, next) })), 'ok', 'and once it is');
  }
});

t.test('a tampered place or path is a bad signature: every size bit, index, each hash of the path, or another command\'s place', async (t) => {
  const batch = batchOf(13);
  let refused = 0;
  for (const c of batch) {
    const tampered: CommandBatch[] = [];
    for (let bit = 0; bit < 20; bit++) {
      const size = c.batch.size ^ (1 << bit);
      if (size > c.batch.index && size <= MAX_BATCH_SIZE) tampered.push({ ...c.batch, size });
      const index = c.batch.index ^ (1 << bit);
      if (index < c.batch.size) tampered.push({ ...c.batch, index });
    }
    c.batch.proof.forEach((h, j) => {
      const raw = Buffer.from(h, 'base64url');
      for (const byte of [0, 17, 31]) {
        const bad = Buffer.from(raw);
        bad[byte] = (bad[byte] as number) ^ 1;
        tampered.push({ ...c.batch, proof: c.batch.proof.map((x, k) => (k === j ? bad.toString('base64url') : x)) });
      }
    });
    tampered.push({ ...c.batch, proof: c.batch.proof.slice(1) }, { ...c.batch, proof: [...c.batch.proof, c.batch.proof[0] as string] });
    for (const other of batch) if (other !== c) tampered.push(other.batch);
    for (const b of tampered) {
      if (reason(verifyOne(c, b)) === 'bad_signature') refused++;
      else t.fail(`command ${c.batch.index}: ${JSON.stringify(b)} was not refused as bad_signature`);
    }
  }
  t.ok(refused > 500, `${refused} tampered places refused`);
  // Another envelope with a genuine place and signature: the leaf is the envelope itself.
  const [a, b] = batch;
  if (!a || !b) throw new Error('no batch');
  t.equal(reason(verifyCommand(b.envelope, a.signature, optsFor(b.envelope.agent_id), a.batch)), 'bad_signature', 'b\'s envelope in a\'s place');
  t.equal(reason(verifyCommand({ ...a.envelope, params: { x: 1 } }, a.signature, optsFor(a.envelope.agent_id), a.batch)), 'malformed', 'a changed envelope that no longer parses');
  t.equal(reason(verifyCommand({ ...a.envelope, issued_at: a.envelope.issued_at + 1 }, a.signature, optsFor(a.envelope.agent_id), a.batch)), 'bad_signature', 'a changed envelope');
});

t.test('a malformed batch field is `malformed`, never a throw', async (t) => {
  const [c] = batchOf(6).slice(3);
  if (!c) throw new Error('no batch');
  const h = c.batch.proof[0] as string;
  const cases: [string, unknown][] = [
    ['null', null],
    ['a string', 'batch'],
    ['an array', [c.batch]],
    ['no proof', { index: c.batch.index, size: c.batch.size }],
    ['an extra field', { ...c.batch, root: h }],
    ['index = size', { ...c.batch, index: 6 }],
    ['negative index', { ...c.batch, index: -1 }],
    ['fractional index', { ...c.batch, index: 1.5 }],
    ['index as a string', { ...c.batch, index: '3' }],
    ['size 0', { ...c.batch, index: 0, size: 0 }],
    ['size over the largest', { ...c.batch, size: MAX_BATCH_SIZE + 1 }],
    ['size not a number', { ...c.batch, size: 'NaN' }],
    ['proof not a list', { ...c.batch, proof: h }],
    ['too many hashes', { ...c.batch, proof: Array.from({ length: MAX_BATCH_PROOF_HASHES + 1 }, () => h) }],
    ['a 31-byte hash', { ...c.batch, proof: [Buffer.alloc(31).toString('base64url')] }],
    ['a 33-byte hash', { ...c.batch, proof: [Buffer.alloc(33).toString('base64url')] }],
    ['padded base64', { ...c.batch, proof: [`${h}=`] }],
    ['standard base64', { ...c.batch, proof: [Buffer.alloc(32, 0xfb).toString('base64').replace(/=+$/, '')] }],
    ['a non-canonical last character', { ...c.batch, proof: [`${h.slice(0, 42)}B`] }],
    ['a hash that is not a string', { ...c.batch, proof: [42] }],
  ];
  for (const [what, batch] of cases) t.equal(reason(verifyOne(c, batch)), 'malformed', what);
  t.equal(reason(verifyCommand(c.envelope, 'x'.repeat(86).replace(/x/g, '*'), optsFor(c.envelope.agent_id), c.batch)), 'malformed', 'a signature that is not base64url');
  // Anything at all in the batch field: a verdict, never an exception, and never ok.
  fc.assert(
    fc.property(fc.oneof(fc.jsonValue(), fc.record({ index: fc.integer(), size: fc.integer(), proof: fc.array(fc.string()) })), (batch) => {
      const v = verifyOne(c, batch);
      return !v.ok;
    }),
    { numRuns: 2_000 },
  );
});

t.test('the checks after the signature hold for batch-signed commands: addressee, time, replay', async (t) => {
  const [c] = batchOf(3);
  if (!c) throw new Error('no batch');
  t.equal(reason(verifyOne(c, c.batch, { selfAgentId: newId('agent') })), 'wrong_agent');
  t.equal(reason(verifyOne(c, c.batch, { now: c.envelope.expires_at + 60_000 })), 'expired');
  t.equal(reason(verifyOne(c, c.batch, { now: NOW - 60_000 })), 'not_yet_valid');
  const seen = new ReplayCache();
  const first = verifyOne(c, c.batch, { seen });
  if (!first.ok) throw new Error(first.detail);
  seen.remember(first.command);
  t.equal(reason(verifyOne(c, c.batch, { seen })), 'replayed', 'the same command again');
});
