/** Runs system tools with argument arrays; never a shell string. */
import { execFile } from '../../child-process.ts';

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

export type ExecFn = (file: string, args: readonly string[], opts?: { timeoutMs?: number }) => Promise<ExecResult>;

const SAFE_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export const execTool: ExecFn = (file, args, opts) =>
  new Promise((resolve) => {
    execFile(
      file,
      [...args],
      {
        timeout: opts?.timeoutMs ?? 30_000,
        maxBuffer: 4 * 1024 * 1024,
        // A fixed PATH and C locale: tool output and glob order must not depend on the caller.
        env: { PATH: SAFE_PATH, LANG: 'C', LC_ALL: 'C' },
        encoding: 'utf8',
      },
      (err, stdout, stderr) => {
        if (err && typeof (err as NodeJS.ErrnoException).code === 'string') {
          // The tool could not be started at all (ENOENT, EACCES).
          resolve({ code: null, stdout: '', stderr: `${file}: ${err.message}` });
          return;
        }
        const code = err ? ((err as { code?: number }).code ?? 1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });

/** The last lines of a tool's output, short enough for an error message. */
export function tail(text: string, max = 600): string {
  const t = text.trim();
  return t.length <= max ? t : '…' + t.slice(t.length - max);
}
