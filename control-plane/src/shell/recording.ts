import { closeSync, mkdirSync, openSync, writeSync } from 'node:fs';
import { dirname } from 'node:path';
import { StringDecoder } from 'node:string_decoder';

/**
 * A shell session written as an asciicast v2 file (what `asciinema play` reads): one
 * JSON header line, then one `[seconds, kind, data]` line per event.
 *
 * Every event is written to the file descriptor at once (no buffering in this process),
 * so a crash of the control plane keeps everything recorded up to that moment. Output
 * bytes are decoded as UTF-8 per stream, holding back a multi-byte sequence split across
 * two chunks instead of turning both halves into U+FFFD.
 */
export interface RecordingHeader {
  width: number;
  height: number;
  /** Epoch seconds of the session's start. */
  timestamp: number;
  term: string;
  title: string;
}

export class RecordingWriteError extends Error {
  override name = 'RecordingWriteError';
}

export class AsciicastWriter {
  readonly path: string;
  #fd: number | null;
  readonly #startedAt: number;
  readonly #now: () => number;
  readonly #out = new StringDecoder('utf8');
  readonly #in = new StringDecoder('utf8');

  /**
   * Creates the file (0600; its directory 0700) and writes the header. Throws
   * RecordingWriteError when the file cannot be created or written.
   */
  constructor(path: string, header: RecordingHeader, now: () => number = Date.now) {
    this.path = path;
    this.#now = now;
    this.#startedAt = now();
    try {
      mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
      // 'wx': a recording is never overwritten, not even one of the same id.
      this.#fd = openSync(path, 'wx', 0o600);
    } catch (err) {
      throw new RecordingWriteError(`cannot create the recording ${path}: ${(err as Error).message}`, { cause: err });
    }
    this.#line({
      version: 2,
      width: header.width,
      height: header.height,
      timestamp: header.timestamp,
      env: { TERM: header.term },
      title: header.title,
    });
  }

  get closed(): boolean {
    return this.#fd === null;
  }

  /** Bytes the VM sent to the operator. */
  output(data: Buffer): void {
    const text = this.#out.write(data);
    if (text !== '') this.#event('o', text);
  }

  /** Bytes the operator typed (only when input recording is on). */
  input(data: Buffer): void {
    const text = this.#in.write(data);
    if (text !== '') this.#event('i', text);
  }

  resize(cols: number, rows: number): void {
    this.#event('r', `${cols}x${rows}`);
  }

  /** Flushes a trailing partial sequence and closes the file. Idempotent. */
  close(): void {
    if (this.#fd === null) return;
    const rest = this.#out.end();
    try {
      if (rest !== '') this.#event('o', rest);
    } finally {
      const fd = this.#fd;
      this.#fd = null;
      if (fd !== null) closeSync(fd);
    }
  }

  #event(kind: 'o' | 'i' | 'r', data: string): void {
    // Microsecond precision, as asciinema writes it.
    const t = Math.max(0, this.#now() - this.#startedAt) / 1000;
    this.#line([Number(t.toFixed(6)), kind, data]);
  }

  #line(value: unknown): void {
    if (this.#fd === null) throw new RecordingWriteError(`the recording ${this.path} is closed`);
    const bytes = Buffer.from(`${JSON.stringify(value)}\n`, 'utf8');
    try {
      let off = 0;
      while (off < bytes.length) off += writeSync(this.#fd, bytes, off);
    } catch (err) {
      throw new RecordingWriteError(`cannot write the recording ${this.path}: ${(err as Error).message}`, { cause: err });
    }
  }
}

/** An asciicast v2 file parsed back (tests, the recording route's sanity checks). */
export interface ParsedAsciicast {
  header: { version: number; width: number; height: number; timestamp: number; env?: { TERM?: string }; title?: string };
  events: [number, string, string][];
}

export function parseAsciicast(text: string): ParsedAsciicast {
  const lines = text.split('\n').filter((l) => l !== '');
  const first = lines.shift();
  if (first === undefined) throw new Error('empty recording');
  const header = JSON.parse(first) as ParsedAsciicast['header'];
  if (header.version !== 2) throw new Error(`not asciicast v2 (version ${String(header.version)})`);
  const events = lines.map((l, i) => {
    const e = JSON.parse(l) as unknown;
    if (!Array.isArray(e) || e.length !== 3 || typeof e[0] !== 'number' || typeof e[1] !== 'string' || typeof e[2] !== 'string') {
      throw new Error(`event ${i + 1} is not [time, kind, data]`);
    }
    return e as [number, string, string];
  });
  return { header, events };
}
