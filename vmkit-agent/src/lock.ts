import { open, readFile, rm } from 'node:fs/promises';

/** Another daemon already serves this state directory. */
export class DaemonLockError extends Error {
  override readonly name = 'DaemonLockError';
}

/** Is `pid` a live vmkit-agent (and not just any process that inherited the number)? */
async function isAgent(pid: number): Promise<boolean> {
  if (pid === process.pid) return false;
  try {
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
    return cmdline.includes('vmkit-agent') || cmdline.includes('cli.ts');
  } catch {
    return false;
  }
}

/**
 * `daemon.pid`, created exclusively. A file left by a daemon that died is taken
 * over; one naming a live vmkit-agent stops this start.
 */
export class DaemonLock {
  readonly #file: string;

  private constructor(file: string) {
    this.#file = file;
  }

  static async acquire(file: string): Promise<DaemonLock> {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fh = await open(file, 'wx', 0o600);
        await fh.writeFile(`${process.pid}\n`);
        await fh.close();
        return new DaemonLock(file);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      }
      const pid = Number((await readFile(file, 'utf8').catch(() => '')).trim());
      if (Number.isInteger(pid) && pid > 0 && (await isAgent(pid))) {
        throw new DaemonLockError(`another vmkit-agent (pid ${pid}) is running with this state directory (${file})`);
      }
      await rm(file, { force: true });
    }
    throw new DaemonLockError(`could not take ${file}; is another vmkit-agent starting?`);
  }

  async release(): Promise<void> {
    const pid = Number((await readFile(this.#file, 'utf8').catch(() => '')).trim());
    if (pid === process.pid) await rm(this.#file, { force: true });
  }
}
