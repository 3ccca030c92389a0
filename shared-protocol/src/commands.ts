import { sign, verify } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { z } from 'zod';
import { canonicalJson } from './canonical.ts';
import { idPattern, idSchema, newId } from './ids.ts';
import { decodePublicKey, keyIdOf } from './keys.ts';
import type { SigningKeyPair } from './keys.ts';
import type { ErrorKey } from './errors.ts';
import { shellOpenParams } from './shell.ts';
import { agentUpdateParams } from './agent-release.ts';
import { KEY_ID_PATTERN, keyIdSchema, signatureSchema, signingKeySchema } from './key-schemas.ts';
import type { SigningKey } from './key-schemas.ts';
import { lazySchema } from './lazy.ts';
import { randomBase64url } from './random-pool.ts';
import { commandBatchSchema, verifyCommandBatch } from './command-batch.ts';

/** How far apart the control plane's and the agent's clocks may be. */
export const CLOCK_SKEW_MS = 30_000;
/** A command lives at most this long, which also bounds the agent's replay cache. */
export const MAX_COMMAND_LIFETIME_MS = 15 * 60_000;
export const DEFAULT_COMMAND_LIFETIME_MS = 5 * 60_000;

/** Domain separation: these signatures can never be mistaken for any other. */
const COMMAND_SIGNING_CONTEXT = 'vmkit-command-v1\n';

const base64url = (min: number, max: number) =>
  z.string().min(min).max(max).regex(/^[A-Za-z0-9_-]+$/, 'must be base64url');

export { keyIdSchema, publicKeySchema, signatureSchema, signingKeySchema } from './key-schemas.ts';
export type { SigningKey } from './key-schemas.ts';
const timestampMs = z.number().int().nonnegative().max(8.64e15);

/** One OpenSSH public key line, e.g. `ssh-ed25519 AAAA... comment`. */
export const sshPublicKeySchema = lazySchema(() =>
  z
    .string()
    .max(16_384)
    .regex(
      /^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com) [A-Za-z0-9+/]+={0,3}( [^\r\n]*)?$/,
      'must be one OpenSSH public key line',
    ),
);

export const pingParams = lazySchema(() =>
  z.strictObject({}),
);
export const factsParams = lazySchema(() =>
  z.strictObject({}),
);
export const hardenParams = lazySchema(() =>
  z.strictObject({
    deploy_keys: z.array(sshPublicKeySchema).max(64),
    dry_run: z.boolean(),
    /** The SSH crypto, forwarding and login-limit policy; absent means on. Sent only to opt out,
     * so agents from before the policy keep accepting the command. */
    ssh_policy: z.boolean().optional(),
  }),
);
export const keysRotateParams = lazySchema(() =>
  z.strictObject({
    add: z.array(signingKeySchema).max(8),
    retire: z.array(keyIdSchema).max(8),
  }),
);

const envelopeBase = {
  id: idSchema('command'),
  agent_id: idSchema('agent'),
  issued_at: timestampMs,
  expires_at: timestampMs,
  nonce: base64url(22, 86),
  key_id: keyIdSchema,
};

/** The typed commands; there is deliberately no "run this string" command. */
export const commandEnvelopeSchema = lazySchema(() =>
  z
    .discriminatedUnion('type', [
      z.strictObject({ ...envelopeBase, type: z.literal('ping'), params: pingParams }),
      z.strictObject({ ...envelopeBase, type: z.literal('facts'), params: factsParams }),
      z.strictObject({ ...envelopeBase, type: z.literal('harden'), params: hardenParams }),
      z.strictObject({ ...envelopeBase, type: z.literal('shell.open'), params: shellOpenParams }),
      z.strictObject({ ...envelopeBase, type: z.literal('keys.rotate'), params: keysRotateParams }),
      z.strictObject({ ...envelopeBase, type: z.literal('agent.update'), params: agentUpdateParams }),
    ])
    .refine((e) => e.expires_at > e.issued_at, { message: 'expires_at must be after issued_at', path: ['expires_at'] })
    .refine((e) => e.expires_at - e.issued_at <= MAX_COMMAND_LIFETIME_MS, {
      message: `a command may live at most ${MAX_COMMAND_LIFETIME_MS} ms`,
      path: ['expires_at'],
    }),
);

export type CommandEnvelope = z.infer<typeof commandEnvelopeSchema>;
export type CommandType = CommandEnvelope['type'];
export type CommandParams<T extends CommandType> = Extract<CommandEnvelope, { type: T }>['params'];
export const COMMAND_TYPES = ['ping', 'facts', 'harden', 'shell.open', 'keys.rotate', 'agent.update'] as const satisfies readonly CommandType[];

export interface SignedCommand {
  envelope: CommandEnvelope;
  signature: string;
}

function signingBytes(envelope: unknown): Buffer {
  return commandSigningBytes(canonicalJson(envelope));
}

/** The bytes a command's signature covers (a batch signature's leaf), given the envelope's canonical JSON. */
export function commandSigningBytes(canonical: string): Buffer {
  return Buffer.from(commandSigningText(canonical), 'utf8');
}

/** commandSigningBytes as text (they are its UTF-8 encoding). */
export function commandSigningText(canonical: string): string {
  return COMMAND_SIGNING_CONTEXT + canonical;
}

/** Signs an envelope given as its canonical JSON. */
export function signCommandText(privateKey: KeyObject, canonical: string): string {
  return sign(null, commandSigningBytes(canonical), privateKey).toString('base64url');
}

export interface NewCommand<T extends CommandType> {
  agentId: string;
  type: T;
  params: CommandParams<T>;
  now?: number;
  lifetimeMs?: number;
  id?: string;
}

/** Builds and signs a command envelope with the control plane's key. */
export function signCommand<T extends CommandType>(key: SigningKeyPair, cmd: NewCommand<T>): SignedCommand {
  const { envelope, canonical } = prepareCommand(key, cmd);
  return { envelope, signature: signCommandText(key.privateKey, canonical) };
}

/**
 * Builds a command envelope for `key` and its canonical JSON, checked and ready to sign
 * (signCommandText, or as one leaf of a batch: command-batch.ts). Throws what the schema
 * refuses, so the control plane never signs what an agent would refuse.
 */
export function prepareCommand<T extends CommandType>(key: Pick<SigningKeyPair, 'keyId'>, cmd: NewCommand<T>): { envelope: CommandEnvelope; canonical: string } {
  const issuedAt = cmd.now ?? Date.now();
  const candidate = {
    id: cmd.id ?? newId('command'),
    agent_id: cmd.agentId,
    type: cmd.type,
    params: cmd.params,
    issued_at: issuedAt,
    expires_at: issuedAt + (cmd.lifetimeMs ?? DEFAULT_COMMAND_LIFETIME_MS),
    nonce: randomBase64url(18),
    key_id: key.keyId,
  };
  return checkedEnvelope(candidate) ?? canonicalized(commandEnvelopeSchema.parse(candidate));
}

const canonicalized = (envelope: CommandEnvelope) => ({ envelope, canonical: canonicalJson(envelope) });

const COMMAND_ID = idPattern('command');
const AGENT_ID = idPattern('agent');
const NONCE = /^[A-Za-z0-9_-]{22,86}$/;
const isTimestamp = (v: unknown): v is number => typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 && v <= 8.64e15;

/** Each command type's params schema (the union's members, by their `type`). */
const PARAMS_OF: Record<CommandType, { safeParse(v: unknown): { success: true; data: unknown } | { success: false } }> = {
  ping: pingParams,
  facts: factsParams,
  harden: hardenParams,
  'shell.open': shellOpenParams,
  'keys.rotate': keysRotateParams,
  'agent.update': agentUpdateParams,
};

/**
 * signCommand's envelope and its canonical JSON, without zod's walk over the whole union
 * nor a general canonicalizer: only the caller's params go through their own schema and
 * canonicalJson; the fields the control plane fills in are checked directly, and being
 * ids, base64url, a key id, a known type and safe integers, they are written as JSON with
 * nothing to escape, keys in RFC 8785 order. Undefined when anything is off (or the
 * envelope has grown a field): the schema and canonicalJson then decide, as before.
 * test/protocol/checked-envelope.test.ts holds both to the same verdicts and bytes.
 */
export function checkedEnvelope(c: Record<string, unknown>): { envelope: CommandEnvelope; canonical: string } | undefined {
  if (Object.keys(c).length !== 8) return undefined;
  const { id, agent_id, type, issued_at, expires_at, nonce, key_id } = c;
  const paramsSchema = typeof type === 'string' && Object.hasOwn(PARAMS_OF, type) ? PARAMS_OF[type as CommandType] : undefined;
  const params = paramsSchema?.safeParse(c.params);
  if (!params?.success) return undefined;
  if (typeof id !== 'string' || !COMMAND_ID.test(id) || typeof agent_id !== 'string' || !AGENT_ID.test(agent_id)) return undefined;
  if (typeof nonce !== 'string' || !NONCE.test(nonce) || typeof key_id !== 'string' || !KEY_ID_PATTERN.test(key_id)) return undefined;
  if (!isTimestamp(issued_at) || !isTimestamp(expires_at) || expires_at <= issued_at || expires_at - issued_at > MAX_COMMAND_LIFETIME_MS) return undefined;
  const envelope = { id, agent_id, type, params: params.data, issued_at, expires_at, nonce, key_id } as CommandEnvelope;
  const canonical =
    `{"agent_id":"${agent_id}","expires_at":${expires_at},"id":"${id}","issued_at":${issued_at},` +
    `"key_id":"${key_id}","nonce":"${nonce}","params":${canonicalJson(params.data)},"type":"${type as string}"}`;
  return { envelope, canonical };
}

/** Signs an already-built envelope (exposed for tests that forge or tamper). */
export function signEnvelope(privateKey: KeyObject, envelope: unknown): string {
  return signCommandText(privateKey, canonicalJson(envelope));
}

/** Why an agent would not run a command; each is a registered error key, sent as a refused result's key. */
export const REFUSAL_REASONS = [
  'malformed',
  'unknown_key',
  'bad_signature',
  'wrong_agent',
  'not_yet_valid',
  'expired',
  'replayed',
] as const satisfies readonly ErrorKey[];
export type RefusalReason = (typeof REFUSAL_REASONS)[number];

export type VerifyResult =
  | { ok: true; command: CommandEnvelope }
  | { ok: false; reason: RefusalReason; detail: string };

/** What the verifier needs to know of commands already accepted. */
export interface SeenCommands {
  has(commandId: string, nonce: string): boolean;
}

export type PinnedKeys = ReadonlyMap<string, KeyObject>;

/** Pins public keys by their derived ids; a key whose id does not match is refused. */
export function pinKeys(keys: Iterable<SigningKey>): Map<string, KeyObject> {
  const pinned = new Map<string, KeyObject>();
  for (const { key_id, public_key } of keys) {
    if (keyIdOf(public_key) !== key_id) throw new TypeError(`key id ${key_id} does not match its public key`);
    pinned.set(key_id, decodePublicKey(public_key));
  }
  return pinned;
}

export interface VerifyOptions {
  pinnedKeys: PinnedKeys;
  selfAgentId: string;
  now: number;
  seen: SeenCommands;
  skewMs?: number;
}

/**
 * Decides whether an agent may run a command. Checks run in a fixed order and the
 * first failure is the one reason returned: shape, key, signature (so nothing about
 * an unsigned envelope is trusted), addressee, time window, replay.
 *
 * With `batch` (the command frame's field; undefined when the frame has none) the
 * signature is a batch signature (command-batch.ts): the envelope's bytes, the audit
 * path and the tree size must lead to a root the key signed.
 */
export function verifyCommand(envelope: unknown, signature: unknown, opts: VerifyOptions, batch?: unknown): VerifyResult {
  const parsed = commandEnvelopeSchema.safeParse(envelope);
  if (!parsed.success) {
    return { ok: false, reason: 'malformed', detail: z.prettifyError(parsed.error) };
  }
  const sig = signatureSchema.safeParse(signature);
  if (!sig.success) return { ok: false, reason: 'malformed', detail: 'signature must be 64 bytes of base64url' };
  const place = batch === undefined ? undefined : commandBatchSchema.safeParse(batch);
  if (place && !place.success) return { ok: false, reason: 'malformed', detail: `batch: ${z.prettifyError(place.error)}` };
  const command = parsed.data;

  const key = opts.pinnedKeys.get(command.key_id);
  if (!key) return { ok: false, reason: 'unknown_key', detail: `key ${command.key_id} is not pinned` };

  // Verify over the envelope exactly as received, not the parsed copy.
  const bytes = signingBytes(envelope);
  const raw = Buffer.from(sig.data, 'base64url');
  if (!(place ? verifyCommandBatch(key, bytes, place.data, raw) : verify(null, bytes, key, raw))) {
    return { ok: false, reason: 'bad_signature', detail: `${place ? 'batch signature' : 'signature'} does not verify under ${command.key_id}` };
  }
  if (command.agent_id !== opts.selfAgentId) {
    return { ok: false, reason: 'wrong_agent', detail: `addressed to ${command.agent_id}` };
  }
  const skew = opts.skewMs ?? CLOCK_SKEW_MS;
  if (command.issued_at > opts.now + skew) {
    return { ok: false, reason: 'not_yet_valid', detail: `issued ${command.issued_at - opts.now} ms in the future` };
  }
  if (opts.now > command.expires_at + skew) {
    return { ok: false, reason: 'expired', detail: `expired ${opts.now - command.expires_at} ms ago` };
  }
  if (opts.seen.has(command.id, command.nonce)) {
    return { ok: false, reason: 'replayed', detail: `command ${command.id} was already accepted` };
  }
  return { ok: true, command };
}

/**
 * Remembers accepted commands until they expire (plus skew): past that the expiry
 * check refuses them anyway. The agent persists `entries()` to disk.
 */
export class ReplayCache implements SeenCommands {
  readonly #byId = new Map<string, ReplayEntry>();
  readonly #nonces = new Set<string>();

  constructor(entries: Iterable<ReplayEntry> = []) {
    for (const e of entries) this.add(e);
  }

  has(commandId: string, nonce: string): boolean {
    return this.#byId.has(commandId) || this.#nonces.has(nonce);
  }

  add(entry: ReplayEntry): void {
    this.#byId.set(entry.id, entry);
    this.#nonces.add(entry.nonce);
  }

  remember(command: CommandEnvelope, skewMs = CLOCK_SKEW_MS): ReplayEntry {
    const entry = { id: command.id, nonce: command.nonce, forget_after: command.expires_at + skewMs };
    this.add(entry);
    return entry;
  }

  /** Drops entries whose commands can no longer pass the expiry check. */
  prune(now: number): number {
    let dropped = 0;
    for (const [id, entry] of this.#byId) {
      if (entry.forget_after < now) {
        this.#byId.delete(id);
        this.#nonces.delete(entry.nonce);
        dropped++;
      }
    }
    return dropped;
  }

  get size(): number {
    return this.#byId.size;
  }

  entries(): IterableIterator<ReplayEntry> {
    return this.#byId.values();
  }
}

export const replayEntrySchema = z.strictObject({
  id: z.string().max(64),
  nonce: z.string().max(86),
  forget_after: timestampMs,
});
export type ReplayEntry = z.infer<typeof replayEntrySchema>;
