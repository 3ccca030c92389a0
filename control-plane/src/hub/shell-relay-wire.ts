/**
 * The internal hop of a relayed shell channel (several control planes on one
 * PostgreSQL database): the process an operator reached (the front) opens a WebSocket
 * at SHELL_RELAY_PATH on the process holding the agent's connection (the holder), at
 * the URL the holder registered (`control_planes.url`, from `--internal-url`).
 *
 * Upgrade headers: from / to node, a timestamp (±60 s of the holder's clock), a nonce,
 * the SHA-256 of the open message, and an HMAC-SHA256 over all of them under a key
 * derived from the secret-box key every process of a deployment shares
 * (SecretBox.subkey(SHELL_RELAY_KEY_PURPOSE)). The holder upgrades only a request whose
 * signature verifies and that it has not seen before.
 *
 * Messages, in order:
 *   front → holder, text:  {"type":"open","request":<ShellOpenRequest>}   (the signed bytes)
 *   holder → front, text:  {"type":"opened","channel":n,"window":n} | {"type":"refused","error":<key>,"message":s}
 *   then both ways, binary: @vmkit/protocol shell frames on that channel id:
 *     front → holder: data, resize, eof, close (the operator ended it), credit
 *     holder → front: data, credit, close (the channel's exit)
 *
 * Flow control is the protocol's own, per hop: each side may have `window` data bytes
 * un-credited in flight. The holder acknowledges the agent's output (its done()) only
 * when the front's credit for it comes back, so credit travels end to end.
 */
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { IncomingHttpHeaders } from 'node:http';
import { z } from 'zod';

export const SHELL_RELAY_PATH = '/internal/shell-relay';

/** The HKDF purpose of the relay key (SecretBox.subkey). */
export const SHELL_RELAY_KEY_PURPOSE = 'vmkit shell relay v1';

export const SHELL_RELAY_HEADERS = {
  from: 'x-vmkit-shell-relay-from',
  to: 'x-vmkit-shell-relay-to',
  at: 'x-vmkit-shell-relay-at',
  nonce: 'x-vmkit-shell-relay-nonce',
  request: 'x-vmkit-shell-relay-request-sha256',
  signature: 'x-vmkit-shell-relay-signature',
} as const;

/** How far a relay's timestamp may be from the holder's clock. */
export const SHELL_RELAY_MAX_SKEW_MS = 60_000;

/** The largest message on the hop: the open request (a command of 16 KiB, 32 env values) or one frame. */
export const SHELL_RELAY_MAX_MESSAGE = 256 * 1024;

export const relayOpenRequest = z.strictObject({
  agentId: z.string().min(1).max(128),
  user: z.string().max(64).optional(),
  cols: z.number().int(),
  rows: z.number().int(),
  term: z.string().max(128),
  env: z.record(z.string(), z.string()).optional(),
  command: z.string().max(32_768).optional(),
  sessionId: z.string().max(128).optional(),
});

export const relayOpenMessage = z.strictObject({ type: z.literal('open'), request: relayOpenRequest });
export type RelayOpenMessage = z.infer<typeof relayOpenMessage>;

export const relayAnswer = z.discriminatedUnion('type', [
  z.strictObject({ type: z.literal('opened'), channel: z.number().int().min(1), window: z.number().int().min(1) }),
  z.strictObject({ type: z.literal('refused'), error: z.string().max(64), message: z.string().max(2048) }),
]);
export type RelayAnswer = z.infer<typeof relayAnswer>;

export interface RelaySignedFields {
  from: string;
  to: string;
  at: number;
  nonce: string;
  /** Hex SHA-256 of the open message's bytes. */
  requestSha256: string;
}

export function sha256Hex(bytes: string | Buffer): string {
  return createHash('sha256').update(bytes).digest('hex');
}

export function relaySignature(key: Buffer, f: RelaySignedFields): string {
  const text = [SHELL_RELAY_KEY_PURPOSE, f.from, f.to, String(f.at), f.nonce, f.requestSha256].join('\n');
  return createHmac('sha256', key).update(text, 'utf8').digest('hex');
}

/** The headers that make an upgrade a signed relay. */
export function relayHeaders(key: Buffer, f: RelaySignedFields): Record<string, string> {
  return {
    [SHELL_RELAY_HEADERS.from]: f.from,
    [SHELL_RELAY_HEADERS.to]: f.to,
    [SHELL_RELAY_HEADERS.at]: String(f.at),
    [SHELL_RELAY_HEADERS.nonce]: f.nonce,
    [SHELL_RELAY_HEADERS.request]: f.requestSha256,
    [SHELL_RELAY_HEADERS.signature]: relaySignature(key, f),
  };
}

export function sameHex(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

function one(value: string | string[] | undefined): string | undefined {
  return Array.isArray(value) ? undefined : value;
}

export type RelayCheck = { ok: true; fields: RelaySignedFields; signature: string } | { ok: false; why: string };

/** Whether an upgrade's headers are a relay signed for `nodeId` within the skew; constant-time compare. */
export function verifyRelayHeaders(key: Buffer, nodeId: string, headers: IncomingHttpHeaders, now: number): RelayCheck {
  const h = SHELL_RELAY_HEADERS;
  const from = one(headers[h.from]);
  const to = one(headers[h.to]);
  const atText = one(headers[h.at]);
  const nonce = one(headers[h.nonce]);
  const requestSha256 = one(headers[h.request]);
  const signature = one(headers[h.signature]);
  if (from === undefined || to === undefined || atText === undefined || nonce === undefined || requestSha256 === undefined || signature === undefined) {
    return { ok: false, why: 'relay headers missing' };
  }
  if (to !== nodeId) return { ok: false, why: 'addressed to another node' };
  if (from === nodeId) return { ok: false, why: 'from this node itself' };
  if (!/^\d{1,16}$/.test(atText) || Math.abs(now - Number(atText)) > SHELL_RELAY_MAX_SKEW_MS) return { ok: false, why: 'timestamp outside the allowed skew' };
  if (!/^[0-9a-f]{64}$/.test(requestSha256) || !/^[A-Za-z0-9_-]{16,64}$/.test(nonce)) return { ok: false, why: 'malformed relay headers' };
  const fields: RelaySignedFields = { from, to, at: Number(atText), nonce, requestSha256 };
  if (!sameHex(signature, relaySignature(key, fields))) return { ok: false, why: 'signature does not verify' };
  return { ok: true, fields, signature };
}
