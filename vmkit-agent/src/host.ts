import { readFile } from 'node:fs/promises';
import { release, type } from 'node:os';
import { parseOsRelease } from './executors/facts.ts';

/** "Debian GNU/Linux 12 (bookworm)", as the hello and enrollment report it. */
export async function osDescription(): Promise<string> {
  for (const f of ['/etc/os-release', '/usr/lib/os-release']) {
    try {
      const pretty = parseOsRelease(await readFile(f, 'utf8')).PRETTY_NAME;
      if (pretty) return pretty.slice(0, 128);
    } catch {
      // next
    }
  }
  return `${type()} ${release()}`.slice(0, 128);
}
