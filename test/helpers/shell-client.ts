/**
 * The operator side of the `vmkit shell` WebSocket for tests: open (or be refused),
 * type, resize, wait for output and for the exit message.
 *
 *   const r = await openShell(cp.url, 'web-1', { key, query: { cols: '80' } });
 *   if ('refused' in r) ...;  const s = r.session;  s.type('echo hi\r'); await s.waitFor(/hi/);
 */
import WebSocket from 'ws';
import { shellPath } from '../../control-plane/src/shell/operator-wire.ts';

export interface ShellExitMessage {
  type: 'exit';
  code: number | null;
  signal: string | null;
  reason: string;
  message: string | null;
}

export class TestShell {
  output = Buffer.alloc(0);
  opened: { session_id: string; instance_id: string } | undefined;
  exit: ShellExitMessage | undefined;
  closed = false;
  readonly #waiters = new Set<() => void>();

  readonly ws: WebSocket;
  constructor(ws: WebSocket) {
    this.ws = ws;
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      if (isBinary) this.output = Buffer.concat([this.output, data]);
      else {
        const msg = JSON.parse(data.toString('utf8')) as { type: string };
        if (msg.type === 'opened') this.opened = msg as unknown as TestShell['opened'];
        if (msg.type === 'exit') this.exit = msg as ShellExitMessage;
      }
      this.#wake();
    });
    ws.on('close', () => {
      this.closed = true;
      this.#wake();
    });
  }

  get text(): string {
    return this.output.toString('utf8');
  }

  type(text: string): void {
    this.ws.send(Buffer.from(text, 'utf8'), { binary: true });
  }

  resize(cols: number, rows: number): void {
    this.ws.send(JSON.stringify({ type: 'resize', cols, rows }));
  }

  /** Resolves when `check` holds; rejects after `ms` (a bound for a stuck session, not a speed check). */
  until<T>(check: () => T | undefined | false, what: string, ms = 120_000): Promise<T> {
    return new Promise((resolve, reject) => {
      const test = () => {
        const v = check();
        if (v !== undefined && v !== false) {
          clearTimeout(timer);
          this.#waiters.delete(test);
          resolve(v);
        }
      };
      const timer = setTimeout(() => {
        this.#waiters.delete(test);
        reject(new Error(`timed out waiting for ${what}; output so far:\n${this.text.slice(-2000)}`));
      }, ms);
      this.#waiters.add(test);
      test();
    });
  }

  /** Output after `from` (a length of `text` taken earlier) that matches. */
  waitFor(re: RegExp, from = 0, ms?: number): Promise<RegExpMatchArray> {
    return this.until(() => this.text.slice(from).match(re) ?? undefined, String(re), ms);
  }

  waitExit(ms?: number): Promise<ShellExitMessage> {
    return this.until(() => this.exit, 'the exit message', ms);
  }

  waitClosed(ms?: number): Promise<true> {
    return this.until(() => this.closed || undefined, 'the socket to close', ms);
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }
}

export type OpenResult =
  | { session: TestShell }
  | { refused: { status: number; headers: Record<string, string | string[] | undefined>; body: { error: string; message: string } } };

export function openShell(baseUrl: string, instance: string, opts: { key: string | null; query?: Record<string, string> }): Promise<OpenResult> {
  const u = new URL(baseUrl + shellPath(instance));
  u.protocol = 'ws:';
  for (const [k, v] of Object.entries(opts.query ?? {})) u.searchParams.set(k, v);
  const ws = new WebSocket(u, { headers: opts.key === null ? {} : { authorization: `Bearer ${opts.key}` } });
  return new Promise((resolve, reject) => {
    const session = new TestShell(ws);
    ws.once('open', () => resolve({ session }));
    ws.once('unexpected-response', (_req, res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ refused: { status: res.statusCode ?? 0, headers: res.headers, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) as { error: string; message: string } } }));
    });
    ws.once('error', reject);
  });
}
