import { readFileSync } from 'node:fs';
import { join } from 'node:path';

/** The dotted key paths of test/fixtures/kamal/documented-keys.txt (`*` = a name the user picks). */
export function documentedKamalKeys(): string[][] {
  const text = readFileSync(join(import.meta.dirname, '..', 'fixtures', 'kamal', 'documented-keys.txt'), 'utf8');
  return text
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !l.startsWith('#'))
    .map((l) => l.split('.'));
}

function matches(pattern: readonly string[], path: readonly string[]): boolean {
  return pattern.length === path.length && pattern.every((seg, i) => seg === '*' || seg === path[i]);
}

/**
 * Every key of a parsed Kamal config (maps only: arrays are values) that the documented
 * list does not hold, as dotted paths; top-level `x-` extensions are ignored as Kamal does.
 */
export function undocumentedKeys(config: unknown, documented: readonly (readonly string[])[] = documentedKamalKeys()): string[] {
  const out: string[] = [];
  const walk = (value: unknown, path: string[]): void => {
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return;
    for (const [key, child] of Object.entries(value)) {
      if (path.length === 0 && key.startsWith('x-')) continue;
      const p = [...path, key];
      if (!documented.some((pattern) => matches(pattern, p))) {
        out.push(p.join('.'));
        continue;
      }
      walk(child, p);
    }
  };
  walk(config, []);
  return out;
}
