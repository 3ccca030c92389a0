import { escapeUnsafeText } from '@vmkit/protocol';

/**
 * A plain text table: a header row, then rows, columns padded to their widest cell.
 * Cells come from the server: control characters in them are printed as escapes,
 * never sent raw to the terminal.
 */
export function table(headers: string[], rows: (string | number | null | undefined)[][]): string {
  const cell = (c: string | number | null | undefined) => (c === null || c === undefined || c === '' ? '-' : escapeUnsafeText(String(c)));
  const cells = [headers, ...rows.map((r) => r.map(cell))];
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)));
  return (
    cells
      .map((r) =>
        r
          .map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i] ?? 0)))
          .join('  ')
          .trimEnd(),
      )
      .join('\n') + '\n'
  );
}

export interface Io {
  stdout: (text: string) => void;
  stderr: (text: string) => void;
  env: NodeJS.ProcessEnv;
  /** Only `vmkit login` reads it (the key, piped or typed). */
  stdin?: NodeJS.ReadableStream;
}

export const processIo: Io = {
  stdout: (t) => process.stdout.write(t),
  stderr: (t) => process.stderr.write(t),
  env: process.env,
  stdin: process.stdin,
};
