/**
 * Summarises a V8 .cpuprofile (node --cpu-prof): the functions with the most self time,
 * and the most inclusive time grouped by package or source file.
 *
 *   node --import tsx scripts/bench/cpuprofile-top.ts FILE.cpuprofile [--top 40] [--match text] [--first-ms N] [--last-ms N]
 *
 * `--last-ms` keeps only the samples of the profile's last N ms (the load phase of a bench, not the start-up);
 * `--first-ms` only those of its first N ms (what a phase does before it settles).
 *
 * `--callers name` prints the call paths (`--depth` frames) that lead to the function `name` (or to a label as printed,
 * `(anonymous) :0` for native code without a name), by its self time.
 * `--match` also prints the inclusive time of every function whose name or file contains the text.
 *
 * Read it knowing what a V8 profile is: wall-clock samples of the JavaScript thread. On a
 * loaded machine the time a process waits for a CPU lands on whatever ran last (often a
 * socket write, which wakes the peer), and the GC's helper threads are not in it; compare
 * shares within one profile, and CPU time from /proc (the mcp bench prints it).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}
interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}
interface Profile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: { top: { type: 'string', default: '40' }, 'last-ms': { type: 'string' }, 'first-ms': { type: 'string' }, callers: { type: 'string' }, depth: { type: 'string', default: '8' }, match: { type: 'string', multiple: true } },
});
const file = positionals[0];
if (file === undefined) throw new Error('usage: cpuprofile-top.ts FILE.cpuprofile [--top N] [--first-ms N] [--last-ms N] [--match text] [--callers name --depth N]');
const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile;
const TOP = Number(values.top);

const byId = new Map(profile.nodes.map((n) => [n.id, n]));
const parent = new Map<number, number>();
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

/** Microseconds of samples whose leaf is each node. */
const self = new Map<number, number>();
const from = values['last-ms'] === undefined ? -Infinity : profile.endTime - Number(values['last-ms']) * 1000;
const until = values['first-ms'] === undefined ? Infinity : profile.startTime + Number(values['first-ms']) * 1000;
let at = profile.startTime;
profile.samples.forEach((id, i) => {
  const delta = profile.timeDeltas[i] ?? 0;
  at += delta;
  if (at >= from && at <= until) self.set(id, (self.get(id) ?? 0) + delta);
});
const total = [...self.values()].reduce((a, b) => a + b, 0);

function short(url: string): string {
  const nm = url.lastIndexOf('node_modules/');
  if (nm >= 0) return url.slice(nm + 'node_modules/'.length);
  const src = url.indexOf('/control-plane/');
  if (src >= 0) return url.slice(src + 1);
  return url.replace(/^file:\/\//, '');
}
function label(f: CallFrame): string {
  return `${f.functionName || '(anonymous)'} ${short(f.url)}:${f.lineNumber + 1}`;
}
/** The package (or project file) a frame belongs to. */
function groupOf(f: CallFrame): string {
  if (f.url === '') return f.functionName.startsWith('(') ? f.functionName : '(native)';
  if (f.url.startsWith('node:')) return f.url;
  const nm = f.url.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const parts = f.url.slice(nm + 'node_modules/'.length).split('/');
    return parts[0]?.startsWith('@') ? `${parts[0]}/${parts[1]}` : (parts[0] ?? f.url);
  }
  return short(f.url);
}

const pct = (us: number) => `${((us / total) * 100).toFixed(1).padStart(5)}%`;
const print = (title: string, rows: [string, number][]) => {
  process.stdout.write(`\n${title}\n`);
  process.stdout.on('error', () => process.exit(0));
  for (const [name, us] of rows.sort((a, b) => b[1] - a[1]).slice(0, TOP)) process.stdout.write(`  ${pct(us)} ${(us / 1000).toFixed(0).padStart(7)} ms  ${name}\n`);
};

process.stdout.write(`${file}: ${(total / 1000).toFixed(0)} ms sampled\n`);
const selfByLabel = new Map<string, number>();
const selfByGroup = new Map<string, number>();
for (const [id, us] of self) {
  const f = byId.get(id)?.callFrame;
  if (!f) continue;
  selfByLabel.set(label(f), (selfByLabel.get(label(f)) ?? 0) + us);
  selfByGroup.set(groupOf(f), (selfByGroup.get(groupOf(f)) ?? 0) + us);
}
print('self time by function', [...selfByLabel]);
print('self time by package / file', [...selfByGroup]);

// Inclusive time: each sample counts once for every distinct function on its stack.
const inclusive = new Map<string, number>();
for (const [id, us] of self) {
  const seen = new Set<string>();
  for (let n: number | undefined = id; n !== undefined; n = parent.get(n)) {
    const f = byId.get(n)?.callFrame;
    if (!f) continue;
    const l = label(f);
    if (seen.has(l)) continue;
    seen.add(l);
    inclusive.set(l, (inclusive.get(l) ?? 0) + us);
  }
}
const matches = values.match ?? [];
if (matches.length > 0) print(`inclusive time of functions matching ${matches.join(', ')}`, [...inclusive].filter(([l]) => matches.some((m) => l.includes(m))));
else print('inclusive time by function', [...inclusive].filter(([l]) => !l.startsWith('(')));

if (values.callers !== undefined) {
  const paths = new Map<string, number>();
  for (const [id, us] of self) {
    const chain: string[] = [];
    let hit = false;
    for (let n: number | undefined = id; n !== undefined && chain.length < Number(values.depth); n = parent.get(n)) {
      const f = byId.get(n)?.callFrame;
      if (!f) continue;
      if (!hit && ((f.functionName || '(anonymous)') === values.callers || label(f) === values.callers)) hit = true;
      if (hit) chain.push(label(f));
    }
    if (hit) paths.set(chain.join(' < '), (paths.get(chain.join(' < ')) ?? 0) + us);
  }
  print(`paths to ${values.callers}`, [...paths]);
}
