/**
 * What /proc says about processes the tests watch (flow-control tests: how far a `cat`
 * of a big file has read while a slow operator takes its output).
 */
import { readdirSync, readFileSync } from 'node:fs';

/** Bytes the process `pid` has read so far (its own read(2) calls), or undefined once it is gone. */
export function bytesRead(pid: number): number | undefined {
  try {
    const v = /rchar:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/io`, 'utf8'))?.[1];
    return v === undefined ? undefined : Number(v);
  } catch {
    return undefined;
  }
}

/** The `cat` reading `file` (found in /proc by its command line), or undefined. */
export function catPid(file: string): number | undefined {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (argv[0]?.endsWith('cat') && argv.includes(file)) return Number(entry);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}
