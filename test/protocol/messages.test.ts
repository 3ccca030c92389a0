import t from 'tap';
import fc from 'fast-check';
import {
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  encodeMessage,
  parseAgentMessage,
  parseMessage,
  parseServerMessage,
  pinKeys,
  verifyCommand,
  ReplayCache,
} from '@vmkit/protocol';
import type { RawFrame } from '@vmkit/protocol';
import { fixtureFrame, fixtureKey, messageFixtures } from '../helpers/fixtures.ts';

t.test('every valid fixture parses to its type', async (t) => {
  const fixtures = messageFixtures('valid');
  t.ok(fixtures.length >= 10, 'the corpus has a case per message type');
  for (const fx of fixtures) {
    const res = parseMessage(fixtureFrame(fx));
    t.ok(res.ok, `${fx.name}: ${fx.description}`);
    if (res.ok && fx.expect.ok) t.equal(res.message.type, fx.expect.type, `${fx.name} has type ${fx.expect.type}`);
    const directional = fx.direction === 'agent' ? parseAgentMessage : fx.direction === 'server' ? parseServerMessage : parseMessage;
    t.ok(directional(fixtureFrame(fx)).ok, `${fx.name} is accepted by the ${fx.direction} side's parser`);
  }
});

t.test('every invalid fixture is refused with its kind', async (t) => {
  for (const fx of messageFixtures('invalid')) {
    const res = parseMessage(fixtureFrame(fx));
    t.notOk(res.ok, `${fx.name}: ${fx.description}`);
    if (!res.ok && !fx.expect.ok) {
      t.equal(res.error.kind, fx.expect.kind, `${fx.name} is ${fx.expect.kind}`);
      t.type(res.error.message, 'string');
      t.ok(res.error.message.length > 0, `${fx.name} explains itself`);
    }
  }
});

t.test('the signed command fixture verifies under the fixture key', async (t) => {
  const fx = messageFixtures('valid').find((f) => f.name === 'command-ping.json');
  const res = fx && parseServerMessage(fixtureFrame(fx));
  if (!res?.ok || res.message.type !== 'command') throw new Error('command fixture missing');
  const cp = fixtureKey('control_plane');
  const verdict = verifyCommand(res.message.envelope, res.message.signature, {
    pinnedKeys: pinKeys([{ key_id: cp.keyId, public_key: cp.publicKey }]),
    selfAgentId: 'agt_01jx4n8rz3q5m7k2p0d6w9b1e1',
    now: 1764000000500,
    seen: new ReplayCache(),
  });
  t.same(verdict.ok, true, 'both sides agree on the canonical bytes of the fixture');
});

t.test('the batch-signed command fixture verifies under the fixture key, and not without its batch', async (t) => {
  const fx = messageFixtures('valid').find((f) => f.name === 'command-ping-batch.json');
  const res = fx && parseServerMessage(fixtureFrame(fx));
  if (!res?.ok || res.message.type !== 'command') throw new Error('batch command fixture missing');
  const cp = fixtureKey('control_plane');
  const opts = {
    pinnedKeys: pinKeys([{ key_id: cp.keyId, public_key: cp.publicKey }]),
    selfAgentId: 'agt_01jx4n8rz3q5m7k2p0d6w9b1e1',
    now: 1764000000500,
    seen: new ReplayCache(),
  };
  const { envelope, signature, batch } = res.message;
  t.same(verifyCommand(envelope, signature, opts, batch).ok, true, 'both sides agree on the leaf bytes, the tree and the signed root');
  t.match(verifyCommand(envelope, signature, opts), { ok: false, reason: 'bad_signature' }, 'the batch signature is no single signature');
});

t.test('a message type is refused on the wrong side', async (t) => {
  const cmd = messageFixtures('valid').find((f) => f.name === 'command-ping.json');
  const hello = messageFixtures('valid').find((f) => f.name === 'hello.json');
  if (!cmd || !hello) throw new Error('fixtures missing');
  const fromAgent = parseAgentMessage(fixtureFrame(cmd));
  t.equal(fromAgent.ok ? 'ok' : fromAgent.error.kind, 'unknown_type', 'an agent cannot send a command');
  const fromServer = parseServerMessage(fixtureFrame(hello));
  t.equal(fromServer.ok ? 'ok' : fromServer.error.kind, 'unknown_type', 'the hub cannot send a hello');
});

t.test('frames over the size limit are refused before parsing', async (t) => {
  const big = JSON.stringify({ protocol: 1, type: 'heartbeat', sent_at: 1, pad: 'x'.repeat(MAX_FRAME_BYTES) });
  const asString = parseMessage(big);
  t.equal(asString.ok ? 'ok' : asString.error.kind, 'oversized');
  const asBuffer = parseMessage(Buffer.from(big));
  t.equal(asBuffer.ok ? 'ok' : asBuffer.error.kind, 'oversized');
  const asFragments = parseMessage([Buffer.alloc(MAX_FRAME_BYTES), Buffer.alloc(1)]);
  t.equal(asFragments.ok ? 'ok' : asFragments.error.kind, 'oversized', 'fragments count together');
  const smallLimit = parseMessage('{"protocol":1,"type":"heartbeat","sent_at":1}', 10);
  t.equal(smallLimit.ok ? 'ok' : smallLimit.error.kind, 'oversized', 'the limit can be lowered');
  const multibyte = parseMessage('é'.repeat(6), 11);
  t.equal(multibyte.ok ? 'ok' : multibyte.error.kind, 'oversized', 'the limit counts bytes, not characters');
});

t.test('frames in every shape ws delivers are parsed', async (t) => {
  const text = '{"protocol":1,"type":"heartbeat","sent_at":5}';
  const u8 = new TextEncoder().encode(text);
  for (const [name, raw] of [
    ['string', text],
    ['Buffer', Buffer.from(text)],
    ['ArrayBuffer', u8.buffer.slice(u8.byteOffset, u8.byteOffset + u8.byteLength)],
    ['Uint8Array', u8],
    ['fragments', [Buffer.from(text.slice(0, 10)), Buffer.from(text.slice(10))] as Buffer[]],
  ] as Array<[string, RawFrame]>) {
    const res = parseMessage(raw);
    t.ok(res.ok && res.message.type === 'heartbeat' && res.message.sent_at === 5, name);
  }
});

t.test('bytes that are not UTF-8 are malformed, not a crash', async (t) => {
  const res = parseMessage(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]));
  t.equal(res.ok ? 'ok' : res.error.kind, 'malformed_json');
});

t.test('encodeMessage refuses to send what the peer would refuse', async (t) => {
  t.equal(encodeMessage({ protocol: PROTOCOL_VERSION, type: 'heartbeat', sent_at: 7 }), '{"protocol":1,"type":"heartbeat","sent_at":7}');
  t.throws(() => encodeMessage({ protocol: PROTOCOL_VERSION, type: 'heartbeat', sent_at: -1 }));
});

t.test('parseMessage never throws, whatever it is fed', async (t) => {
  const assertNoThrow = (raw: string | Uint8Array) => {
    const res = parseMessage(raw);
    return typeof res.ok === 'boolean' && (res.ok || typeof res.error.message === 'string');
  };
  fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), (bytes) => assertNoThrow(bytes)), { numRuns: 2000 });
  fc.assert(fc.property(fc.string({ maxLength: 512 }), (s) => assertNoThrow(s)), { numRuns: 2000 });
  fc.assert(fc.property(fc.jsonValue({ maxDepth: 6 }), (v) => assertNoThrow(JSON.stringify(v) ?? 'null')), { numRuns: 2000 });
  // Objects that look almost right reach the schema, which must still not throw.
  const almost = fc.record({
    protocol: fc.oneof(fc.constant(1), fc.jsonValue()),
    type: fc.oneof(fc.constantFrom('challenge', 'hello', 'welcome', 'heartbeat', 'command', 'ack', 'progress', 'result', 'result_ack', 'error'), fc.string()),
    command_id: fc.oneof(fc.constant('cmd_01jx4n8rz3q5m7k2p0d6w9b1e0'), fc.jsonValue()),
    envelope: fc.jsonValue(),
    status: fc.jsonValue(),
    error: fc.jsonValue(),
  }, { requiredKeys: ['protocol', 'type'] });
  fc.assert(fc.property(almost, (v) => assertNoThrow(JSON.stringify(v))), { numRuns: 3000 });
  // Deep nesting must not blow the stack into an exception.
  t.ok(assertNoThrow('['.repeat(100_000) + ']'.repeat(100_000)), 'deeply nested arrays');
  t.ok(assertNoThrow(`{"protocol":1,"type":"progress","detail":${'{"a":'.repeat(5000)}1${'}'.repeat(5000)}}`), 'deeply nested objects');
});
