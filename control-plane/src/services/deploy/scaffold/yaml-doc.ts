import { Document, Scalar, isMap, isNode } from 'yaml';

/**
 * Every generated YAML file is built as a document by the `yaml` package rather than
 * by pasting strings, so a value (a name, a host, a comment) can never become YAML
 * syntax: the library quotes whatever needs quoting.
 */
export function yamlDocument(value: unknown, header: string): Document {
  const doc = new Document(value);
  doc.commentBefore = header
    .split('\n')
    .map((l) => (l === '' ? '' : ` ${l}`))
    .join('\n');
  return doc;
}

/** Puts a `# comment` line above the key at `path` (a comment is data, never syntax). */
export function commentAbove(doc: Document, path: readonly string[], comment: string): void {
  const parent = path.length === 1 ? doc.contents : doc.getIn(path.slice(0, -1), true);
  if (!isMap(parent)) throw new Error(`no map at ${path.slice(0, -1).join('.')}`);
  const pair = parent.items.find((p) => isNode(p.key) && (p.key as Scalar).value === path[path.length - 1]);
  if (!pair || !isNode(pair.key)) throw new Error(`no key ${path.join('.')}`);
  pair.key.commentBefore = comment
    .split('\n')
    .map((l) => ` ${l}`)
    .join('\n');
}

/**
 * An ERB tag Kamal evaluates before it parses the YAML, left as a plain scalar: quoting
 * it with double quotes would escape the Ruby inside. The tag is a constant, never
 * user input; what it renders is checked by the workflow before Kamal runs.
 */
export function erb(ruby: string): Scalar {
  const s = new Scalar(`<%= ${ruby} %>`);
  s.type = Scalar.PLAIN;
  return s;
}

export function render(doc: Document): string {
  // lineWidth 0: never fold long lines (commands, expressions) across lines.
  return doc.toString({ lineWidth: 0 });
}
