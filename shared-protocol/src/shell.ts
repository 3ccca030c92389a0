import { z } from 'zod';
import { idSchema } from './ids.ts';
import { lazySchema } from './lazy.ts';

/**
 * The ops shell on the agent's WebSocket: `shell.open` (a signed command) starts a PTY
 * bound to a channel id the control plane chose; the PTY's bytes then travel as binary
 * WebSocket frames (JSON messages are text frames, so the two never mix).
 *
 * A channel frame:
 *
 *   offset 0   u8      SHELL_FRAME_VERSION
 *   offset 1   u8      kind: 1 data, 2 resize, 3 eof, 4 close, 5 credit
 *   offset 2   u32 BE  channel id (1 .. 2^32-1)
 *   offset 6   payload, by kind:
 *     data     1 .. SHELL_MAX_DATA_BYTES raw bytes, passed through untouched
 *     resize   u16 BE cols, u16 BE rows (1 .. 1000 each)          (hub → agent)
 *     eof      nothing                                             (hub → agent)
 *     close    u8 reason, u16 BE exit code (0xFFFF: none), u8 signal-name length n
 *              (0 .. 15), n ASCII bytes (`SIGTERM`), then a UTF-8 message (≤ 1024 bytes)
 *     credit   u32 BE bytes (1 .. SHELL_MAX_WINDOW)
 *
 * Flow control: each side may have at most SHELL_INITIAL_WINDOW data bytes in flight
 * per channel, per direction. A receiver returns credit for the bytes it has passed
 * on (to the PTY, or to the operator); a sender that runs out of credit stops (the
 * agent pauses reading the PTY). Memory per channel is thus bounded by the window,
 * whatever the speed of the slowest reader.
 */
export const SHELL_FRAME_VERSION = 1;
export const SHELL_FRAME_HEADER_BYTES = 6;
/** Largest data payload in one frame: small enough to interleave many channels on one socket. */
export const SHELL_MAX_DATA_BYTES = 32 * 1024;
/** Data bytes a sender may have unacknowledged per channel and direction at the start. */
export const SHELL_INITIAL_WINDOW = 256 * 1024;
/** No single grant may exceed this (a receiver never grants more than it buffers). */
export const SHELL_MAX_WINDOW = 16 * 1024 * 1024;
export const SHELL_MAX_CHANNEL_ID = 0xffff_ffff;
const MAX_CLOSE_MESSAGE_BYTES = 1024;
const NO_EXIT_CODE = 0xffff;

export const SHELL_FRAME_KINDS = ['data', 'resize', 'eof', 'close', 'credit'] as const;
export type ShellFrameKind = (typeof SHELL_FRAME_KINDS)[number];
const KIND_CODE: Record<ShellFrameKind, number> = { data: 1, resize: 2, eof: 3, close: 4, credit: 5 };

/** Why a channel ended; the order is the wire code (0 .. 5). */
export const SHELL_CLOSE_REASONS = ['exit', 'idle_timeout', 'max_length', 'agent_disconnected', 'closed', 'error'] as const;
export type ShellCloseReason = (typeof SHELL_CLOSE_REASONS)[number];

const channelId = z.number().int().min(1).max(SHELL_MAX_CHANNEL_ID);
const dimension = z.number().int().min(1).max(1000);
const bytes = z.custom<Buffer>((v) => Buffer.isBuffer(v), 'must be a Buffer');

export const shellDataFrame = lazySchema(() =>
  z.strictObject({
    kind: z.literal('data'),
    channel: channelId,
    data: bytes.refine((b) => b.length >= 1 && b.length <= SHELL_MAX_DATA_BYTES, `1 .. ${SHELL_MAX_DATA_BYTES} bytes`),
  }),
);
export const shellResizeFrame = lazySchema(() =>
  z.strictObject({ kind: z.literal('resize'), channel: channelId, cols: dimension, rows: dimension }),
);
export const shellEofFrame = lazySchema(() =>
  z.strictObject({ kind: z.literal('eof'), channel: channelId }),
);
export const shellCloseFrame = lazySchema(() =>
  z.strictObject({
    kind: z.literal('close'),
    channel: channelId,
    reason: z.enum(SHELL_CLOSE_REASONS),
    code: z.number().int().min(0).max(255).nullable(),
    signal: z
      .string()
      .regex(/^SIG[A-Z0-9]{1,12}$/, 'a signal name such as SIGTERM')
      .nullable(),
    message: z.string().refine((s) => Buffer.byteLength(s, 'utf8') <= MAX_CLOSE_MESSAGE_BYTES, `at most ${MAX_CLOSE_MESSAGE_BYTES} bytes`),
  }),
);
export const shellCreditFrame = lazySchema(() =>
  z.strictObject({ kind: z.literal('credit'), channel: channelId, bytes: z.number().int().min(1).max(SHELL_MAX_WINDOW) }),
);

export const shellFrameSchema = lazySchema(() =>
  z.discriminatedUnion('kind', [shellDataFrame, shellResizeFrame, shellEofFrame, shellCloseFrame, shellCreditFrame]),
);
export type ShellFrame = z.infer<typeof shellFrameSchema>;
export type ShellFrameOf<K extends ShellFrameKind> = Extract<ShellFrame, { kind: K }>;

/** Why a binary frame was refused (counted and logged; the frame is dropped). */
export type ShellFrameError = { reason: 'too_short' | 'bad_version' | 'unknown_kind' | 'bad_length' | 'invalid'; message: string; channel?: number };
export type ShellFrameResult = { ok: true; frame: ShellFrame } | { ok: false; error: ShellFrameError };

/** Encodes a frame after checking it against its schema (throws on a frame the peer would refuse). */
export function encodeShellFrame(frame: ShellFrame): Buffer {
  const f = shellFrameSchema.parse(frame);
  const payload = payloadOf(f);
  const out = Buffer.allocUnsafe(SHELL_FRAME_HEADER_BYTES + payload.length);
  out.writeUInt8(SHELL_FRAME_VERSION, 0);
  out.writeUInt8(KIND_CODE[f.kind], 1);
  out.writeUInt32BE(f.channel, 2);
  payload.copy(out, SHELL_FRAME_HEADER_BYTES);
  return out;
}

/** The data frame encoder on the hot path: no schema pass, the caller bounds the chunk. */
export function encodeShellData(channel: number, data: Buffer): Buffer {
  if (data.length < 1 || data.length > SHELL_MAX_DATA_BYTES || !channelId.safeParse(channel).success) {
    throw new RangeError(`data frame of ${data.length} bytes on channel ${channel} is out of bounds`);
  }
  const out = Buffer.allocUnsafe(SHELL_FRAME_HEADER_BYTES + data.length);
  out.writeUInt8(SHELL_FRAME_VERSION, 0);
  out.writeUInt8(KIND_CODE.data, 1);
  out.writeUInt32BE(channel, 2);
  data.copy(out, SHELL_FRAME_HEADER_BYTES);
  return out;
}

function payloadOf(f: ShellFrame): Buffer {
  switch (f.kind) {
    case 'data':
      return f.data;
    case 'resize': {
      const b = Buffer.alloc(4);
      b.writeUInt16BE(f.cols, 0);
      b.writeUInt16BE(f.rows, 2);
      return b;
    }
    case 'eof':
      return Buffer.alloc(0);
    case 'credit': {
      const b = Buffer.alloc(4);
      b.writeUInt32BE(f.bytes, 0);
      return b;
    }
    case 'close': {
      const signal = Buffer.from(f.signal ?? '', 'ascii');
      const head = Buffer.alloc(4);
      head.writeUInt8(SHELL_CLOSE_REASONS.indexOf(f.reason), 0);
      head.writeUInt16BE(f.code ?? NO_EXIT_CODE, 1);
      head.writeUInt8(signal.length, 3);
      return Buffer.concat([head, signal, Buffer.from(f.message, 'utf8')]);
    }
  }
}

const fail = (reason: ShellFrameError['reason'], message: string, channel?: number): ShellFrameResult => ({
  ok: false,
  error: { reason, message, ...(channel === undefined ? {} : { channel }) },
});

/** Decodes one binary frame. Never throws; the data payload is a view on `raw`, not a copy. */
export function decodeShellFrame(raw: Buffer): ShellFrameResult {
  if (raw.length < SHELL_FRAME_HEADER_BYTES) return fail('too_short', `a frame has a ${SHELL_FRAME_HEADER_BYTES}-byte header; got ${raw.length} bytes`);
  const version = raw.readUInt8(0);
  if (version !== SHELL_FRAME_VERSION) return fail('bad_version', `frame version ${version} is not supported (this side speaks ${SHELL_FRAME_VERSION})`);
  const code = raw.readUInt8(1);
  const kind = SHELL_FRAME_KINDS[code - 1];
  const channel = raw.readUInt32BE(2);
  if (kind === undefined) return fail('unknown_kind', `unknown frame kind ${code}`, channel);
  const p = raw.subarray(SHELL_FRAME_HEADER_BYTES);
  const exact = (n: number) => (p.length === n ? undefined : fail('bad_length', `a ${kind} frame carries ${n} payload bytes; got ${p.length}`, channel));
  let candidate: unknown;
  switch (kind) {
    case 'data':
      candidate = { kind, channel, data: p };
      break;
    case 'resize':
      candidate = exact(4) ?? { kind, channel, cols: p.readUInt16BE(0), rows: p.readUInt16BE(2) };
      break;
    case 'eof':
      candidate = exact(0) ?? { kind, channel };
      break;
    case 'credit':
      candidate = exact(4) ?? { kind, channel, bytes: p.readUInt32BE(0) };
      break;
    case 'close': {
      if (p.length < 4) return fail('bad_length', `a close frame carries at least 4 payload bytes; got ${p.length}`, channel);
      const reason = SHELL_CLOSE_REASONS[p.readUInt8(0)];
      const exit = p.readUInt16BE(1);
      const sigLen = p.readUInt8(3);
      if (p.length < 4 + sigLen) return fail('bad_length', `the signal name runs past the frame`, channel);
      let message: string;
      try {
        message = new TextDecoder('utf-8', { fatal: true }).decode(p.subarray(4 + sigLen));
      } catch {
        return fail('invalid', 'the close message is not UTF-8', channel);
      }
      candidate = {
        kind,
        channel,
        reason: reason ?? `#${p.readUInt8(0)}`,
        code: exit === NO_EXIT_CODE ? null : exit,
        signal: sigLen === 0 ? null : p.subarray(4, 4 + sigLen).toString('latin1'),
        message,
      };
      break;
    }
  }
  if (typeof candidate === 'object' && candidate !== null && 'ok' in candidate) return candidate as ShellFrameResult;
  const parsed = shellFrameSchema.safeParse(candidate);
  if (!parsed.success) return fail('invalid', z.prettifyError(parsed.error), channel);
  return { ok: true, frame: parsed.data };
}

/**
 * Environment names an operator may pass to the remote process. TERM travels on its
 * own; anything that changes how programs load or run (PATH, LD_*, BASH_ENV, ...) never.
 */
export const SHELL_ENV_NAME = /^(LANG|LANGUAGE|LC_[A-Z]{1,20}|TZ|COLORTERM)$/;

const noNul = (s: string) => !s.includes('\0');

export const shellOpenParams = lazySchema(() =>
  z.strictObject({
    /** The channel the control plane chose for this session's frames on this connection. */
    channel: channelId,
    /** The control plane's session record, for the agent's log. */
    session_id: idSchema('shellSession').optional(),
    /** Account to run as; the agent's configured default when absent. */
    user: z
      .string()
      .regex(/^[a-z_][a-z0-9_-]{0,31}$/, 'must be a POSIX user name')
      .optional(),
    cols: dimension,
    rows: dimension,
    term: z.string().regex(/^[A-Za-z0-9._+-]{1,64}$/, 'must be a terminal type such as xterm-256color'),
    env: z
      .record(z.string().regex(SHELL_ENV_NAME, 'only LANG, LANGUAGE, LC_*, TZ and COLORTERM may be passed'), z.string().max(1024).refine(noNul, 'no NUL bytes'))
      .refine((r) => Object.keys(r).length <= 32, 'at most 32 variables')
      .optional(),
    /** Runs this through the user's shell (`-c`) instead of a login shell; its exit status closes the channel. */
    command: z.string().min(1).max(16_384).refine(noNul, 'no NUL bytes').optional(),
  }),
);
export type ShellOpenParams = z.infer<typeof shellOpenParams>;

/** What a successful `shell.open` result carries in `output`. */
export const shellOpenResultSchema = lazySchema(() =>
  z.strictObject({
    channel: channelId,
    pid: z.number().int().positive(),
    user: z.string().max(32),
    /** Data bytes the agent lets the control plane send before its first credit. */
    window: z.number().int().min(1).max(SHELL_MAX_WINDOW),
  }),
);
export type ShellOpenResult = z.infer<typeof shellOpenResultSchema>;
