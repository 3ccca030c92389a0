import { ERROR_KEYS } from './errors.ts';
import { idPattern } from './ids.ts';

/**
 * The four frames every command of a fan-out costs (`command` and `result_ack` out, `ack`
 * and `result` in), recognised without zod: at thousands of commands a second zod's
 * general walk cost more than the JSON itself. Each check only ever accepts (what it
 * cannot vouch for goes on to the schema, which also words the refusal), and accepts
 * nothing the schema in messages.ts refuses: test/protocol/hot-frames.test.ts holds the
 * two to the same verdicts. `value`'s `protocol` and `type` were already checked.
 */
const COMMAND_ID = idPattern('command');
const ERROR_KEY_SET: ReadonlySet<string> = new Set(ERROR_KEYS);
const RESULT_KEYS: ReadonlySet<string> = new Set(['protocol', 'type', 'command_id', 'status', 'output', 'error', 'finished_at']);
const STATUSES: ReadonlySet<unknown> = new Set(['succeeded', 'failed', 'refused']);
const MAX_TIMESTAMP = 8.64e15;

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** An object literal's (or JSON's) kind of object: no class, so its JSON is its own enumerable keys. */
export function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (!isObject(v)) return false;
  const proto = Object.getPrototypeOf(v) as unknown;
  return proto === Object.prototype || proto === null;
}

const isCommandId = (v: unknown) => typeof v === 'string' && COMMAND_ID.test(v);

/** Exactly these own enumerable keys, in any order. */
function hasExactly(value: Record<string, unknown>, keys: readonly string[]): boolean {
  const own = Object.keys(value);
  return own.length === keys.length && own.every((k) => keys.includes(k));
}

const ID_ONLY_KEYS = ['protocol', 'type', 'command_id'];
const COMMAND_KEYS = ['protocol', 'type', 'envelope', 'signature'];
const BATCH_COMMAND_KEYS = [...COMMAND_KEYS, 'batch'];

const HEARTBEAT_KEYS = ['protocol', 'type', 'sent_at'];

/**
 * `{protocol, type, sent_at}` and nothing else: an agent's heartbeat (or the hub's, with no
 * acks on it). An idle fleet sends one per agent every interval: 1,200 a second at 18,000.
 */
export function isPlainHeartbeat(value: Record<string, unknown>): boolean {
  const { sent_at } = value;
  return hasExactly(value, HEARTBEAT_KEYS) && typeof sent_at === 'number' && Number.isSafeInteger(sent_at) && sent_at >= 0 && sent_at <= MAX_TIMESTAMP;
}

/** `{protocol, type, command_id}` and nothing else: an `ack` or a `result_ack`. */
export function isCommandIdOnly(value: Record<string, unknown>): boolean {
  return hasExactly(value, ID_ONLY_KEYS) && isCommandId(value.command_id);
}

/** A result the schema accepts: known keys only, a command id, a status, its error exactly when it failed, a time. */
export function isPlainResult(value: Record<string, unknown>): boolean {
  for (const k of Object.keys(value)) if (!RESULT_KEYS.has(k)) return false;
  const { command_id, status, output, error, finished_at } = value;
  if (!isCommandId(command_id) || !STATUSES.has(status)) return false;
  if (typeof finished_at !== 'number' || !Number.isSafeInteger(finished_at) || finished_at < 0 || finished_at > MAX_TIMESTAMP) return false;
  if ('output' in value) {
    if (!isObject(output)) return false;
    for (const k of Object.keys(output)) if (k.length > 128) return false;
  }
  if ('error' in value) {
    if (!isObject(error) || Object.keys(error).length !== 2) return false;
    if (typeof error.key !== 'string' || !ERROR_KEY_SET.has(error.key)) return false;
    if (typeof error.message !== 'string' || error.message.length > 2048) return false;
  }
  return (status === 'succeeded') === !('error' in value);
}

/**
 * A `command` frame: an envelope object and, for a batch-signed one, a batch object (keys
 * of at most 64 characters; verifyCommand judges the rest) and a signature.
 */
export function isPlainCommand(value: Record<string, unknown>): boolean {
  const { envelope, signature, batch } = value;
  if (!(hasExactly(value, COMMAND_KEYS) || hasExactly(value, BATCH_COMMAND_KEYS)) || !isPlainRecord(envelope)) return false;
  if ('batch' in value && !isPlainRecord(batch)) return false;
  return typeof signature === 'string' && signature.length <= 128;
}

/**
 * A plain object whose keys have at most 64 characters. An own `__proto__` key (never in
 * one the control plane made) is left to zod, whose copy makes it the prototype and so
 * encodes differently.
 */
function isPlainRecord(value: unknown): boolean {
  if (!isPlainObject(value)) return false;
  for (const k of Object.keys(value)) if (k.length > 64 || k === '__proto__') return false;
  return true;
}
