import { z } from 'zod';
import { idSchema } from './ids.ts';
import { signatureSchema, signingKeySchema } from './commands.ts';
import { agentPlatformSchema } from './agent-release.ts';
import { errorKeySchema } from './errors.ts';
import type { ErrorKey } from './errors.ts';
import { isCommandIdOnly, isPlainCommand, isPlainHeartbeat, isPlainObject, isPlainResult } from './hot-frames.ts';

/** Version of the agent WebSocket protocol; every message carries it. */
export const PROTOCOL_VERSION = 1;
/**
 * Largest frame either side accepts: 1 MiB. Commands and results are a few KiB
 * (facts, per-step harden detail); shell output travels in smaller chunks.
 */
export const MAX_FRAME_BYTES = 1024 * 1024;

/**
 * Upgrade request header in which an agent names the optional messages it understands,
 * comma-separated. Unknown names are ignored, so either side may be newer. A header,
 * not a hello field: hellos are strict objects, and an older hub would refuse one with
 * a field it does not know.
 */
export const AGENT_FEATURES_HEADER = 'x-vmkit-agent-features';
/**
 * Optional messages (and message fields) an agent may name in `AGENT_FEATURES_HEADER`:
 * `queued` (the handshake line's message), `heartbeat-acks` (result acks on the hub's
 * heartbeat), `batch-signature` (a `command` may carry `batch` and a batch signature:
 * command-batch.ts).
 */
export const AGENT_FEATURES = ['queued', 'heartbeat-acks', 'batch-signature'] as const;
export type AgentFeature = (typeof AGENT_FEATURES)[number];

/** The known features in an `AGENT_FEATURES_HEADER` value (absent, repeated or junk → none of them). */
export function parseAgentFeatures(header: string | string[] | undefined): Set<AgentFeature> {
  const found = new Set<AgentFeature>();
  if (typeof header !== 'string' || header.length > 256) return found;
  for (const part of header.split(',')) {
    const name = part.trim();
    for (const known of AGENT_FEATURES) if (name === known) found.add(known);
  }
  return found;
}

const protocol = z.literal(PROTOCOL_VERSION);
const timestampMs = z.number().int().nonnegative().max(8.64e15);
const commandId = idSchema('command');
const shortText = (max: number) => z.string().max(max);
/** A challenge nonce: 32 random bytes, base64url. */
const challengeNonce = z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'must be 32 bytes of base64url');
const detail = z.record(z.string().max(128), z.unknown());

export const challengeMessage = z.strictObject({
  protocol,
  type: z.literal('challenge'),
  nonce: challengeNonce,
  server_time: timestampMs,
});

export const helloMessage = z.strictObject({
  protocol,
  type: z.literal('hello'),
  agent_id: idSchema('agent'),
  nonce: challengeNonce,
  signature: signatureSchema,
  agent_version: shortText(64),
  hostname: shortText(253),
  os: shortText(128),
  /** The release platform the agent runs on (linux-x64, ...): fleet rollouts pick the release by it. Absent from agents older than self-update. */
  platform: agentPlatformSchema.optional(),
});

export const welcomeMessage = z.strictObject({
  protocol,
  type: z.literal('welcome'),
  agent_id: idSchema('agent'),
  heartbeat_interval_ms: z.number().int().min(100).max(600_000),
  server_time: timestampMs,
  signing_keys: z.array(signingKeySchema).max(8),
});

/**
 * The hub's answer to a verified hello when its handshake bound is spent and the agent
 * said it understands this message (upgrade header `x-vmkit-agent-features` naming
 * `queued`): the agent is held in line, first come first served, and welcomed on this
 * connection within `welcome_within_ms`; it waits that long instead of timing out or
 * dialling again. Agents that did not say so are never sent it.
 */
export const queuedMessage = z.strictObject({
  protocol,
  type: z.literal('queued'),
  /** Agents ahead of this one, plus one. */
  position: z.number().int().min(1).max(1_000_000),
  welcome_within_ms: z.number().int().nonnegative().max(600_000),
});

export const heartbeatMessage = z.strictObject({
  protocol,
  type: z.literal('heartbeat'),
  sent_at: timestampMs,
});

/** At most this many results are acknowledged by one hub heartbeat; more go out at once. */
export const MAX_HEARTBEAT_ACKS = 64;

/**
 * The hub's heartbeat. To an agent that named `heartbeat-acks` in `x-vmkit-agent-features`
 * it also carries `result_acks`: results the hub has stored since its last heartbeat to
 * that agent, each meaning exactly what a `result_ack` means (the agent's journal may let
 * the result go). They ride on the heartbeat the hub sends anyway rather than costing a
 * frame each; the agent keeps such results journaled until then (at most one heartbeat
 * interval longer), and re-sends any it still has after a reconnect, as with `result_ack`.
 * Agents that did not name the feature get a `result_ack` per result and never this field.
 */
export const hubHeartbeatMessage = z.strictObject({
  protocol,
  type: z.literal('heartbeat'),
  sent_at: timestampMs,
  result_acks: z.array(commandId).min(1).max(MAX_HEARTBEAT_ACKS).optional(),
});

export const commandMessage = z.strictObject({
  protocol,
  type: z.literal('command'),
  // Checked by verifyCommand against the bytes as sent, so the agent can name the
  // refusal reason (`malformed`, `bad_signature`, ...) with the command's id.
  envelope: z.record(z.string().max(64), z.unknown()),
  signature: z.string().max(128),
  /**
   * Present when `signature` signs a batch of commands: `{index, size, proof}`
   * (command-batch.ts), checked by verifyCommand like the envelope. Sent only to agents
   * that named `batch-signature`; an older agent's strict schema would refuse the frame.
   */
  batch: z.record(z.string().max(64), z.unknown()).optional(),
});

export const ackMessage = z.strictObject({
  protocol,
  type: z.literal('ack'),
  command_id: commandId,
});

export const progressMessage = z.strictObject({
  protocol,
  type: z.literal('progress'),
  command_id: commandId,
  seq: z.number().int().nonnegative(),
  step: shortText(64),
  state: z.enum(['started', 'done', 'failed', 'skipped']),
  message: shortText(1024).optional(),
  detail: detail.optional(),
});

export const resultMessage = z
  .strictObject({
    protocol,
    type: z.literal('result'),
    command_id: commandId,
    status: z.enum(['succeeded', 'failed', 'refused']),
    output: detail.optional(),
    error: z.strictObject({ key: errorKeySchema, message: shortText(2048) }).optional(),
    finished_at: timestampMs,
  })
  .refine((m) => (m.status === 'succeeded') === (m.error === undefined), {
    message: 'a failed or refused result carries an error, a successful one does not',
    path: ['error'],
  });

export const resultAckMessage = z.strictObject({
  protocol,
  type: z.literal('result_ack'),
  command_id: commandId,
});

export const errorMessage = z.strictObject({
  protocol,
  type: z.literal('error'),
  key: errorKeySchema,
  message: shortText(2048),
  command_id: commandId.optional(),
  /** Sent by an overloaded hub: wait at least this long before dialling again. */
  retry_after_ms: z.number().int().nonnegative().max(3_600_000).optional(),
});

export const serverMessageSchema = z.discriminatedUnion('type', [
  challengeMessage,
  queuedMessage,
  welcomeMessage,
  hubHeartbeatMessage,
  commandMessage,
  resultAckMessage,
  errorMessage,
]);
export const agentMessageSchema = z.discriminatedUnion('type', [
  helloMessage,
  heartbeatMessage,
  ackMessage,
  progressMessage,
  resultMessage,
  errorMessage,
]);
export const messageSchema = z.discriminatedUnion('type', [
  challengeMessage,
  helloMessage,
  queuedMessage,
  welcomeMessage,
  hubHeartbeatMessage,
  commandMessage,
  ackMessage,
  progressMessage,
  resultMessage,
  resultAckMessage,
  errorMessage,
]);

export type ServerMessage = z.infer<typeof serverMessageSchema>;
export type AgentMessage = z.infer<typeof agentMessageSchema>;
export type Message = z.infer<typeof messageSchema>;
export type MessageType = Message['type'];
export type MessageOf<T extends MessageType> = Extract<Message, { type: T }>;

export const MESSAGE_TYPES = [
  'challenge',
  'hello',
  'queued',
  'welcome',
  'heartbeat',
  'command',
  'ack',
  'progress',
  'result',
  'result_ack',
  'error',
] as const satisfies readonly MessageType[];

const SERVER_TYPES: ReadonlySet<string> = new Set(serverMessageSchema.options.map((o) => o.shape.type.value));
const AGENT_TYPES: ReadonlySet<string> = new Set(
  agentMessageSchema.options.map((o) => o.shape.type.value),
);
const ALL_TYPES: ReadonlySet<string> = new Set(MESSAGE_TYPES);

/** Why a frame was refused; each is a registered error key, so a peer can be told it as is. */
export const PARSE_ERROR_KINDS = [
  'oversized',
  'malformed_json',
  'unsupported_protocol',
  'unknown_type',
  'schema_violation',
] as const satisfies readonly ErrorKey[];
export type ParseErrorKind = (typeof PARSE_ERROR_KINDS)[number];

export interface ParseError {
  kind: ParseErrorKind;
  message: string;
  /** The message type, when the frame got far enough to name one. */
  type?: string;
}

export type ParseResult<M> = { ok: true; message: M } | { ok: false; error: ParseError };

/** What `ws` hands a message listener, plus plain strings. */
export type RawFrame = string | Buffer | ArrayBuffer | Buffer[] | Uint8Array;

/** One decoder for every frame: a non-streaming decode keeps no state between calls. */
const utf8 = new TextDecoder('utf-8', { fatal: true });

function frameText(raw: RawFrame, maxBytes: number): string | ParseError {
  let size: number;
  if (typeof raw === 'string') size = Buffer.byteLength(raw, 'utf8');
  else if (Array.isArray(raw)) size = raw.reduce((n, b) => n + b.byteLength, 0);
  else size = raw.byteLength;
  if (size > maxBytes) return { kind: 'oversized', message: `frame of ${size} bytes exceeds the ${maxBytes}-byte limit` };
  if (typeof raw === 'string') return raw;
  return utf8.decode(Array.isArray(raw) ? Buffer.concat(raw) : raw);
}

function parseWith<M>(raw: RawFrame, schema: z.ZodType<M>, allowed: ReadonlySet<string>, maxBytes: number): ParseResult<M> {
  try {
    const text = frameText(raw, maxBytes);
    if (typeof text !== 'string') return { ok: false, error: text };
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (err) {
      return { ok: false, error: { kind: 'malformed_json', message: (err as Error).message } };
    }
    if (typeof value !== 'object' || value === null || Array.isArray(value)) {
      return { ok: false, error: { kind: 'schema_violation', message: 'a message is a JSON object' } };
    }
    const record = value as Record<string, unknown>;
    const type = typeof record.type === 'string' ? record.type.slice(0, 64) : undefined;
    if (record.protocol !== PROTOCOL_VERSION) {
      return {
        ok: false,
        error: {
          kind: 'unsupported_protocol',
          message: `protocol ${JSON.stringify(record.protocol) ?? 'missing'} is not supported (this side speaks ${PROTOCOL_VERSION})`,
          ...(type === undefined ? {} : { type }),
        },
      };
    }
    if (type === undefined || !allowed.has(type)) {
      return {
        ok: false,
        error: {
          kind: 'unknown_type',
          message: type === undefined ? 'message has no type' : `unknown message type ${JSON.stringify(type)}`,
          ...(type === undefined ? {} : { type }),
        },
      };
    }
    // The hot replies of a fan-out, checked without zod (only ever accepting what the schema accepts).
    if ((type === 'ack' && isCommandIdOnly(record)) || (type === 'result' && isPlainResult(record)) || (type === 'heartbeat' && isPlainHeartbeat(record))) {
      return { ok: true, message: record as M };
    }
    const parsed = schema.safeParse(value);
    if (!parsed.success) {
      return { ok: false, error: { kind: 'schema_violation', message: z.prettifyError(parsed.error), type } };
    }
    return { ok: true, message: parsed.data };
  } catch (err) {
    // Invalid UTF-8 lands here (TextDecoder is fatal); nothing else should, but the
    // contract of this function is that it never throws.
    return { ok: false, error: { kind: 'malformed_json', message: `frame is not UTF-8 JSON: ${(err as Error).message}` } };
  }
}

/** Parses any protocol message. Never throws. */
export function parseMessage(raw: RawFrame, maxBytes = MAX_FRAME_BYTES): ParseResult<Message> {
  return parseWith(raw, messageSchema, ALL_TYPES, maxBytes);
}

/** Parses a message as the hub receives it: only types an agent may send. */
export function parseAgentMessage(raw: RawFrame, maxBytes = MAX_FRAME_BYTES): ParseResult<AgentMessage> {
  return parseWith(raw, agentMessageSchema, AGENT_TYPES, maxBytes);
}

/** Parses a message as the agent receives it: only types the hub may send. */
export function parseServerMessage(raw: RawFrame, maxBytes = MAX_FRAME_BYTES): ParseResult<ServerMessage> {
  return parseWith(raw, serverMessageSchema, SERVER_TYPES, maxBytes);
}

/** Serialises a message after checking it, so neither side sends what the other would refuse. */
export function encodeMessage(message: Message): string {
  // The frames every command costs, checked without zod (only ever accepting what the schema accepts).
  const record = message as unknown as Record<string, unknown>;
  if (message.protocol === PROTOCOL_VERSION && isPlainObject(record)) {
    if ((message.type === 'command' && isPlainCommand(record)) || (message.type === 'result_ack' && isCommandIdOnly(record))) return JSON.stringify(message);
  }
  return JSON.stringify(messageSchema.parse(message));
}
