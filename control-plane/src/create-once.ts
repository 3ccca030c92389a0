import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, linkSync, openSync, unlinkSync, writeSync } from 'node:fs';

/**
 * Creates `file` with `content` unless it exists, all or nothing: the content goes to a
 * temporary file (synced), which is then hard-linked into place. A process reading the
 * file never sees it half-written, a process killed while writing leaves no partial file
 * behind (only a stray `*.tmp`), and of several processes creating it at once the first
 * wins and none overwrites it. Answers whether this call created it.
 */
export function createFileOnce(file: string, content: string, mode: number): boolean {
  const tmp = `${file}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`;
  const fd = openSync(tmp, 'wx', mode);
  try {
    writeSync(fd, content);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  try {
    linkSync(tmp, file);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    unlinkSync(tmp);
  }
}
