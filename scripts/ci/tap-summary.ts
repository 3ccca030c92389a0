/**
 * The closing line of .ci/run: tap's final "# { total: N, pass: N, fail: N, skip: N, todo: N }"
 * said as one plain line, with skipped and todo tests named as such (never folded into
 * the passes). Usage: node --import tsx scripts/ci/tap-summary.ts <tap output file>
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

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const file = process.argv[2];
  if (file === undefined) throw new Error('usage: tap-summary.ts <tap output file>');
  console.log(tapSummary(readFileSync(file, 'utf8')));
}
