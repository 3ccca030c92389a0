import { isDeepStrictEqual } from 'node:util';
import t from 'tap';
import fc from 'fast-check';
import {
  PROTOCOL_VERSION,
  ackMessage,
  agentMessageSchema,
  commandMessage,
  heartbeatMessage,
  hubHeartbeatMessage,
  encodeMessage,
  generateSigningKeyPair,
  messageSchema,
  newId,
  parseAgentMessage,
  parseServerMessage,
  resultAckMessage,
  resultMessage,
  serverMessageSchema,
  signCommand,
} from '@vmkit/protocol';
import type { Message } from '@vmkit/protocol';
import { isCommandIdOnly, isPlainCommand, isPlainHeartbeat, isPlainResult } from '../../shared-protocol/src/hot-frames.ts';
import { NUMBER_EDGES } from './edge-values.ts';

const commandId = newId('command');
const validResults: Record<string, unknown>[] = [
  { protocol: PROTOCOL_VERSION, type: 'result', command_id: commandId, status: 'succeeded', output: { pong: true }, finished_at: 1_700_000_000_000 },
  { protocol: PROTOCOL_VERSION, type: 'result', command_id: commandId, status: 'succeeded', finished_at: 0 },
  { protocol: PROTOCOL_VERSION, type: 'result', command_id: commandId, status: 'failed', error: { key: 'internal', message: 'x' }, finished_at: 8.64e15 },
  { protocol: PROTOCOL_VERSION, type: 'result', command_id: commandId, status: 'refused', error: { key: 'bad_signature', message: '' }, output: {}, finished_at: 5 },
];

const signed = signCommand(generateSigningKeyPair(), { agentId: newId('agent'), type: 'ping', params: {} });
const validCommand: Record<string, unknown> = { protocol: PROTOCOL_VERSION, type: 'command', envelope: signed.envelope, signature: signed.signature };
const aBatch = { index: 1, size: 2, proof: [Buffer.alloc(32).toString('base64url')] };
const validBatchCommand: Record<string, unknown> = { ...validCommand, batch: aBatch };

t.test('the frames of a fan-out take the quick path', async (t) => {
  t.ok(isCommandIdOnly({ protocol: PROTOCOL_VERSION, type: 'ack', command_id: commandId }));
  t.ok(isCommandIdOnly({ protocol: PROTOCOL_VERSION, type: 'result_ack', command_id: commandId }));
  for (const r of validResults) t.ok(isPlainResult(r), JSON.stringify(r));
  t.ok(isPlainCommand(validCommand));
  t.ok(isPlainCommand(validBatchCommand), 'a batch-signed command too');
});

// Values worth trying in every field: valid ones, near misses, wrong types.
const anyValue = fc.oneof(
  fc.constantFrom<unknown>(
    commandId,
    `${commandId}x`,
    newId('agent'),
    'succeeded',
    'failed',
    'refused',
    'running',
    ...NUMBER_EDGES,
    null,
    true,
    [],
    {},
    { pong: true },
    { ['k'.repeat(128)]: 1 },
    { ['k'.repeat(129)]: 1 },
    { key: 'internal', message: 'm' },
    { key: 'internal', message: 'm'.repeat(2049) },
    { key: 'internal', message: 'm'.repeat(2048) },
    { key: 'no_such_key', message: 'm' },
    { key: 'internal' },
    { key: 'internal', message: 'm', extra: 1 },
    { key: 'internal', message: 3 },
    JSON.parse('{"__proto__": {"x": 1}}') as unknown,
    'A'.repeat(86),
    'A'.repeat(129),
    { ['e'.repeat(64)]: 1, id: 'x' },
    { ['e'.repeat(65)]: 1 },
    new Date(0),
    Object.create(null) as unknown,
    aBatch,
    { ...aBatch, ['p'.repeat(65)]: 1 },
  ),
  fc.jsonValue({ maxDepth: 2 }),
);
const keys = fc.constantFrom('command_id', 'status', 'output', 'error', 'finished_at', 'envelope', 'signature', 'batch', 'sent_at', 'result_acks', 'extra', '__proto__');

/** A reply built from a valid one with fields replaced, added or removed. */
const mutated = (base: fc.Arbitrary<Record<string, unknown>>, viaJson = true) =>
  fc.tuple(base, fc.array(fc.tuple(keys, fc.option(anyValue, { nil: undefined })), { maxLength: 4 })).map(([b, edits]) => {
    const m: Record<string, unknown> = { ...b };
    for (const [k, v] of edits) {
      if (v === undefined) delete m[k];
      else Object.defineProperty(m, k, { value: v, enumerable: true, writable: true, configurable: true });
    }
    // What the hub is handed: the frame's JSON text, parsed (or, sending, the object as built).
    return viaJson ? (JSON.parse(JSON.stringify(m)) as Record<string, unknown>) : m;
  });

t.test('the quick checks accept nothing the schemas refuse, and the parser agrees with the schemas', async (t) => {
  const results = mutated(fc.constantFrom(...validResults));
  const acks = mutated(fc.constant({ protocol: PROTOCOL_VERSION, type: 'ack', command_id: commandId }));
  const heartbeats = mutated(fc.constantFrom(...[0, 1_700_000_000_000, 8.64e15].map((sent_at) => ({ protocol: PROTOCOL_VERSION, type: 'heartbeat', sent_at }))));
  const plainHubHeartbeat = { protocol: PROTOCOL_VERSION, type: 'heartbeat', sent_at: 1_700_000_000_000 };
  const hubHeartbeats = mutated(fc.constantFrom(plainHubHeartbeat, { ...plainHubHeartbeat, result_acks: [commandId] }));
  const asAgentSends = (m: unknown) => parseAgentMessage(JSON.stringify(m)).ok === agentMessageSchema.safeParse(m).success;
  // The agent's side: a hub heartbeat may carry result_acks.
  const asHubSends = (m: unknown) => parseServerMessage(JSON.stringify(m)).ok === serverMessageSchema.safeParse(m).success;
  for (const [name, arb, quick, schema, parserAgrees] of [
    ['result', results, isPlainResult, resultMessage, asAgentSends],
    ['ack', acks, isCommandIdOnly, ackMessage, asAgentSends],
    ['heartbeat', heartbeats, isPlainHeartbeat, heartbeatMessage, asAgentSends],
    ['hub heartbeat', hubHeartbeats, isPlainHeartbeat, hubHeartbeatMessage, asHubSends],
  ] as const) {
    let quickAccepted = 0;
    let refused = 0;
    fc.assert(
      fc.property(arb, (m) => {
        const accepted = schema.safeParse(m).success;
        if (quick(m)) {
          quickAccepted++;
          if (!accepted) return false;
        }
        if (!accepted) refused++;
        return parserAgrees(m);
      }),
      { numRuns: 20_000 },
    );
    t.ok(quickAccepted > 100, `${name}: many took the quick path (${quickAccepted})`);
    t.ok(refused > 100, `${name}: many were refused (${refused})`);
  }
  t.notOk(isPlainHeartbeat({ ...plainHubHeartbeat, result_acks: [commandId] }), 'a heartbeat with acks on it is left to the schema');
  t.notOk(isPlainHeartbeat({ ...plainHubHeartbeat, sent_at: 1.5 }), 'sent_at not an integer');
  t.notOk(isPlainHeartbeat({ ...plainHubHeartbeat, sent_at: -1 }), 'sent_at negative');
});

t.test('frames the hub sends: encoded the quick way exactly when the schema accepts them, to the same JSON', async (t) => {
  const commands = mutated(fc.constantFrom(validCommand, validBatchCommand), false);
  const resultAcks = mutated(fc.constant({ protocol: PROTOCOL_VERSION, type: 'result_ack', command_id: commandId }), false);
  for (const [name, arb, quick, schema] of [
    ['command', commands, isPlainCommand, commandMessage],
    ['result_ack', resultAcks, isCommandIdOnly, resultAckMessage],
  ] as const) {
    let quickAccepted = 0;
    let refused = 0;
    fc.assert(
      fc.property(arb, (m) => {
        const parsed = messageSchema.safeParse(m);
        if (quick(m)) {
          quickAccepted++;
          if (!schema.safeParse(m).success) return false;
        }
        let encoded: string | undefined;
        try {
          encoded = encodeMessage(m as Message);
        } catch {
          encoded = undefined;
        }
        if (!parsed.success) {
          refused++;
          return encoded === undefined;
        }
        // The same JSON value (key order aside, which no reader depends on: the envelope is verified in canonical form).
        return encoded !== undefined && isDeepStrictEqual(JSON.parse(encoded), JSON.parse(JSON.stringify(parsed.data)));
      }),
      { numRuns: 20_000 },
    );
    t.ok(quickAccepted > 100, `${name}: many took the quick path (${quickAccepted})`);
    t.ok(refused > 100, `${name}: many were refused (${refused})`);
  }
});
