/**
 * A small reader of the Prometheus text exposition format (0.0.4), enough for tests to
 * assert on series: `# TYPE` lines and `name{label="value",...} number` samples.
 *
 *   const scrape = parsePromText(await res.text());
 *   scrape.value('vmkit_agents_connected', { node_id: 'cp-a' })  // number | undefined
 *   scrape.samples('vmkit_http_request_duration_seconds_count')  // every labelled sample
 */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Scrape {
  samples(name: string): Sample[];
  /** The value of the one sample of `name` whose labels include `labels`; throws when several match. */
  value(name: string, labels?: Record<string, string>): number | undefined;
  /** Sum over the samples of `name` whose labels include `labels`. */
  sum(name: string, labels?: Record<string, string>): number;
  /** The `# TYPE` of each metric family. */
  types: Map<string, string>;
  all: Sample[];
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)(?:\s+\d+)?$/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"\s*,?/gy;

function unescape(v: string): string {
  return v.replace(/\\(["\\n])/g, (_, c: string) => (c === 'n' ? '\n' : c));
}

function parseLabels(text: string, line: string): Record<string, string> {
  const labels: Record<string, string> = {};
  LABEL.lastIndex = 0;
  let consumed = 0;
  for (let m = LABEL.exec(text); m; m = LABEL.exec(text)) {
    labels[m[1] ?? ''] = unescape(m[2] ?? '');
    consumed = LABEL.lastIndex;
  }
  if (consumed !== text.length) throw new Error(`malformed labels in: ${line}`);
  return labels;
}

function number(raw: string, line: string): number {
  if (raw === '+Inf') return Infinity;
  if (raw === '-Inf') return -Infinity;
  // prom-client writes `Nan`; Prometheus reads NaN in any case.
  if (raw.toLowerCase() === 'nan') return NaN;
  const n = Number(raw);
  if (Number.isNaN(n)) throw new Error(`malformed value in: ${line}`);
  return n;
}

export function parsePromText(text: string): Scrape {
  const all: Sample[] = [];
  const types = new Map<string, string>();
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if (line.startsWith('#')) {
      const type = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line);
      if (type) types.set(type[1] ?? '', type[2] ?? '');
      else if (!line.startsWith('# HELP ')) throw new Error(`malformed comment: ${line}`);
      continue;
    }
    const m = SAMPLE.exec(line);
    if (!m) throw new Error(`malformed sample: ${line}`);
    all.push({ name: m[1] ?? '', labels: m[2] ? parseLabels(m[2], line) : {}, value: number(m[3] ?? '', line) });
  }
  const matching = (name: string, labels: Record<string, string> = {}) =>
    all.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return {
    all,
    types,
    samples: (name) => matching(name),
    value(name, labels) {
      const hits = matching(name, labels);
      if (hits.length > 1) throw new Error(`${hits.length} samples of ${name} match ${JSON.stringify(labels)}`);
      return hits[0]?.value;
    },
    sum: (name, labels) => matching(name, labels).reduce((acc, s) => acc + s.value, 0),
  };
}
