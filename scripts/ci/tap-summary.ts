/**
 * The closing lines of .ci/run: tap's final "# { total: N, pass: N, fail: N, skip: N, todo: N }"
 * said as one plain line, with skipped and todo tests named as such (never folded into
 * the passes), then every failure with where it sits and why, so that the last lines of a
 * CI log (often all anyone sees of it) name what failed, not only how many.
 * Usage: node --import tsx scripts/ci/tap-summary.ts <tap output file>
 */
import { readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

export function tapSummary(output: string): string {
  const last = output
    .split('\n')
    .filter((l) => /^# \{ total: \d+/.test(l))
    .at(-1);
  if (last === undefined) return 'no tap summary found: the test run did not finish';
  const n = (key: string): number => Number(new RegExp(`\\b${key}: (\\d+)`).exec(last)?.[1] ?? 0);
  const parts = [`${n('pass')} passed`, `${n('fail')} failed`];
  if (n('skip') > 0) parts.push(`${n('skip')} skipped`);
  if (n('todo') > 0) parts.push(`${n('todo')} todo`);
  return parts.join(', ');
}

/** Diagnostic keys worth a reader's lines; `source` repeats the test file and `args` the runner. */
const SKIPPED_KEYS = new Set(['source', 'args', 'command', 'stdio', 'cwd', 'externalID', 'at']);

export interface FailureLimits {
  /** Failures listed in full; the rest are counted. */
  readonly failures: number;
  /** Diagnostic lines kept per failure. */
  readonly lines: number;
}

/**
 * The failures in a TAP stream, innermost first: each as "FAIL file > subtest > assertion" and its
 * YAML diagnostics (minus the source excerpt and the runner's command line). A subtest's own
 * "not ok" is listed only when nothing inside it failed (a timeout, a bad plan, a crashed file).
 */
export function tapFailures(output: string, limits: FailureLimits = { failures: 10, lines: 30 }): string[] {
  const lines = output.split('\n');
  const headers: { indent: number; name: string; leaves: number }[] = [];
  const blocks: string[][] = [];
  let total = 0;
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i] ?? '';
    const indent = line.length - line.trimStart().length;
    const body = line.trimStart();
    const header = /^# Subtest: (.*)$/.exec(body);
    if (header !== null) {
      while (headers.length > 0 && (headers.at(-1)?.indent ?? -1) >= indent) headers.pop();
      headers.push({ indent, name: header[1] ?? '', leaves: 0 });
      continue;
    }
    const fail = /^not ok \d+ - (.*?)(?: # time=[\d.]+m?s)?$/.exec(body);
    if (fail === null) continue;
    const name = fail[1] ?? '';
    // Headers at this indent or deeper belong to finished siblings or to this subtest itself.
    const own = headers.findIndex((h) => h.indent === indent && h.name === name);
    const enclosing = headers.filter((h) => h.indent < indent);
    const isSubtestEnd = own !== -1;
    const innerFailures = isSubtestEnd ? (headers[own]?.leaves ?? 0) : 0;
    while (headers.length > 0 && (headers.at(-1)?.indent ?? -1) >= indent) headers.pop();
    if (isSubtestEnd && innerFailures > 0) continue;
    for (const h of enclosing) h.leaves++;
    total++;
    if (blocks.length >= limits.failures) continue;
    const block = [`FAIL ${[...enclosing.map((h) => h.name), name].join(' > ')}`];
    if ((lines[i + 1] ?? '').trim() === '---') {
      let skipping = false;
      for (let j = i + 2; j < lines.length; j++) {
        const diag = lines[j] ?? '';
        if (diag.trim() === '...') break;
        const rel = diag.slice(indent + 2);
        const key = /^([A-Za-z_][\w-]*):/.exec(rel);
        if (key !== null) skipping = SKIPPED_KEYS.has(key[1] ?? '');
        if (skipping) continue;
        if (block.length > limits.lines) {
          block.push('    …');
          break;
        }
        block.push(`    ${rel}`);
      }
    }
    blocks.push(block);
  }
  const out = blocks.flat();
  if (total > blocks.length) out.push(`… and ${total - blocks.length} more failures`);
  return out;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const file = process.argv[2];
  if (file === undefined) throw new Error('usage: tap-summary.ts <tap output file>');
  const output = readFileSync(file, 'utf8');
  const failures = tapFailures(output);
  if (failures.length > 0) console.log(failures.join('\n'));
  console.log(tapSummary(output));
}
