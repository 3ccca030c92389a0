import { constants } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import { parseArgs } from 'node:util';
import WebSocket from 'ws';
import { errorBodySchema, escapeUnsafeText } from '@vmkit/protocol';
import { ServerControl, shellPath } from '../shell/operator-wire.ts';
import type { Io } from './output.ts';
import { resolveKey, resolveUrl } from './rest-client.ts';

export const SHELL_USAGE = `Usage: vmkit shell INSTANCE [--url URL] [--key vmk_...] [--user NAME] [-- COMMAND...]

Opens a shell on the instance (its id or name) through the control plane, or runs
COMMAND there. Exits with the remote exit status (255 when the session could not run
or was ended by the control plane). The key needs the shell scope.
`;

/** The local terminal: the process's by default; tests pass streams. */
export interface Terminal {
  stdin: Readable & { isTTY?: boolean; setRawMode?: (raw: boolean) => unknown };
  stdout: Writable & { isTTY?: boolean; columns?: number; rows?: number };
  /** Subscribes to SIGWINCH, SIGTERM, SIGHUP...; returns the unsubscribe. */
  onSignal(signal: NodeJS.Signals, cb: () => void): () => void;
}

export const processTerminal: Terminal = {
  stdin: process.stdin,
  stdout: process.stdout,
  onSignal(signal, cb) {
    process.on(signal, cb);
    return () => process.off(signal, cb);
  },
};

/** Status for a session that ended without an exit code of its own (ssh uses 255 the same way). */
const NO_STATUS = 255;

function exitStatus(msg: Extract<ServerControl, { type: 'exit' }>): number {
  if (msg.code !== null && msg.reason === 'exit') return msg.code & 0xff;
  if (msg.signal !== null && msg.reason === 'exit') {
    const n = constants.signals[(msg.signal.startsWith('SIG') ? msg.signal : `SIG${msg.signal}`) as keyof typeof constants.signals];
    return n === undefined ? NO_STATUS : 128 + n;
  }
  return msg.code ?? NO_STATUS;
}

/** The door's URL as messages name it: no query (it may carry the command). */
function doorUrl(url: string): string {
  const u = new URL(url);
  return `${u.protocol}//${u.host}${u.pathname}`;
}

function wsUrl(base: string, instance: string, q: Record<string, string | undefined>): string {
  const u = new URL(base.replace(/\/+$/, '') + shellPath(instance));
  u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:';
  for (const [k, v] of Object.entries(q)) if (v !== undefined) u.searchParams.set(k, v);
  return u.toString();
}
/**
 * `vmkit shell INSTANCE [-- COMMAND]`: the terminal in raw mode, bytes both ways over
 * the WebSocket with backpressure (stdin is paused while the socket's buffer is full;
 * the socket is paused while stdout is), SIGWINCH as resize. The terminal is restored
 * on every way out: remote exit, refusal, dropped connection, signals, exceptions.
 */
export async function runShellCli(argv: string[], io: Io, term: Terminal = processTerminal): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: { user: { type: 'string' }, url: { type: 'string' }, key: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
      allowPositionals: true,
      strict: true,
    });
  } catch (err) {
    io.stderr(`${(err as Error).message}\n\n${SHELL_USAGE}`);
    return 2;
  }
  if (parsed.values.help) {
    io.stdout(SHELL_USAGE);
    return 0;
  }
  let key: string;
  try {
    key = resolveKey(parsed.values.key, io.env, resolveUrl(parsed.values.url, io.env));
  } catch (err) {
    io.stderr(`${(err as Error).message}\n`);
    return 2;
  }
  const [instance, ...words] = parsed.positionals;
  if (instance === undefined || instance === '') {
    io.stderr(SHELL_USAGE);
    return 2;
  }
  const { stdin, stdout } = term;
  const tty = stdin.isTTY === true && typeof stdin.setRawMode === 'function';
  const command = words.length > 0 ? words.join(' ') : undefined;
  const size = () => ({ cols: stdout.columns ?? 80, rows: stdout.rows ?? 24 });
  const url = wsUrl(resolveUrl(parsed.values.url, io.env), instance, {
    cols: String(size().cols),
    rows: String(size().rows),
    term: io.env.TERM && /^[A-Za-z0-9._+-]{1,64}$/.test(io.env.TERM) ? io.env.TERM : 'xterm-256color',
    command,
    user: parsed.values.user,
  });

  const cleanups: (() => void)[] = [];
  const restore = () => {
    for (const c of cleanups.splice(0).reverse()) {
      try {
        c();
      } catch {
        // restoring the rest matters more
      }
    }
  };
  try {
    return await new Promise<number>((resolve) => {
      let status = NO_STATUS;
      let said = false;
      const ws = new WebSocket(url, { headers: { authorization: `Bearer ${key}` }, perMessageDeflate: false });
      const done = (code: number) => {
        restore();
        resolve(code);
      };
      cleanups.push(() => {
        if (ws.readyState === ws.OPEN || ws.readyState === ws.CONNECTING) ws.terminate();
      });
      for (const sig of ['SIGTERM', 'SIGHUP', 'SIGINT'] as const) {
        // In raw mode ^C is a byte for the remote shell; these come from elsewhere.
        cleanups.push(term.onSignal(sig, () => done(128 + (constants.signals[sig] ?? 0))));
      }
      ws.on('unexpected-response', (_req, res) => {
        said = true;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          let body: unknown;
          try {
            body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
          } catch {
            body = undefined;
          }
          const e = errorBodySchema.safeParse(body);
          io.stderr(
            e.success
              ? `error: ${escapeUnsafeText(`${e.data.error}: ${e.data.message} (GET ${doorUrl(url)} answered ${res.statusCode ?? '?'})`)}\n`
              : `error: GET ${escapeUnsafeText(doorUrl(url))} answered HTTP ${res.statusCode ?? '?'} without a VMKit error body (is that URL a VMKit control plane?)\n`,
          );
          done(1);
        });
      });
      ws.on('error', (err) => {
        said = true;
        const code = (err as NodeJS.ErrnoException).code;
        io.stderr(`error: ${escapeUnsafeText(`cannot reach the control plane at ${doorUrl(url)}: ${code ?? err.message}`)}\n`);
        done(1);
      });
      ws.on('open', () => {
        if (tty) {
          stdin.setRawMode?.(true);
          cleanups.push(() => stdin.setRawMode?.(false));
        }
        cleanups.push(
          term.onSignal('SIGWINCH', () => {
            if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: 'resize', ...size() }));
          }),
        );
        let unsent = 0;
        const onInput = (chunk: Buffer) => {
          unsent++;
          ws.send(chunk, { binary: true }, () => {
            if (--unsent === 0 && stdin.isPaused()) stdin.resume();
          });
          // A paste or a pipe faster than the network: stop reading until the socket catches up.
          if (ws.bufferedAmount > 256 * 1024) stdin.pause();
        };
        const onEnd = () => {
          if (ws.readyState === ws.OPEN) ws.send(JSON.stringify({ type: 'eof' }));
        };
        stdin.on('data', onInput);
        stdin.on('end', onEnd);
        stdin.resume();
        cleanups.push(() => {
          stdin.off('data', onInput);
          stdin.off('end', onEnd);
          stdin.pause();
        });
      });
      ws.on('message', (data: Buffer, isBinary: boolean) => {
        if (isBinary) {
          if (!stdout.write(data)) {
            ws.pause();
            stdout.once('drain', () => ws.resume());
          }
          return;
        }
        let msg: unknown;
        try {
          msg = JSON.parse(data.toString('utf8'));
        } catch {
          return;
        }
        const ctl = ServerControl.safeParse(msg);
        if (!ctl.success) return;
        if (ctl.data.type === 'exit') {
          status = exitStatus(ctl.data);
          said = true;
          if (ctl.data.message !== null && ctl.data.reason !== 'exit') {
            io.stderr(`${tty ? '\r\n' : ''}vmkit: session closed: ${escapeUnsafeText(ctl.data.message)}\n`);
          }
        } else if (ctl.data.type === 'error') {
          io.stderr(`vmkit: ${escapeUnsafeText(ctl.data.message)}\n`);
        }
      });
      ws.on('close', () => {
        if (!said) io.stderr(`${tty ? '\r\n' : ''}vmkit: the connection to the control plane closed\n`);
        // stdout may still hold output: wait for it before the caller exits.
        if (stdout.writableNeedDrain) stdout.once('drain', () => done(status));
        else done(status);
      });
    });
  } finally {
    restore();
  }
}
