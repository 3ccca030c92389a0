/**
 * Where the hardened settings go so that they win, and which Match lines must go.
 *
 * sshd keeps the first value it reads for these keywords, so the settings must come
 * before anything else that sets them: a drop-in named to sort first in an
 * `Include`d directory when that Include is global and precedes every conflicting
 * value, otherwise a managed block at the very top of sshd_config.
 *
 * The settings are the rules of ssh-policy.ts: always no root login, passwords or
 * keyboard-interactive auth; with the SSH policy also the crypto, forwarding and
 * login limits.
 *
 * Values inside `Match` blocks (`Match all` included) override the global ones for
 * matching connections. We rewrite (comment out, with a marker) the Match lines that
 * would loosen a rule (root login, passwords, X11 forwarding...) rather than refusing: a refusal would
 * leave the VM unhardened, the original line stays visible in the comment, and the
 * backup restores it byte for byte if any check fails.
 */
import { posix } from 'node:path';
import {
  canonicalKeyword,
  dominantEol,
  flatten,
  globMatches,
  hasGlobMagic,
  joinLines,
  resolveIncludePattern,
  splitLines,
} from './sshd-config.ts';
import type { ConfigTree, FlatDirective } from './sshd-config.ts';
import { BASE_RULES } from './ssh-policy.ts';
import type { PolicyRule } from './ssh-policy.ts';

export const DROP_IN_NAME = '00-vmkit-hardening.conf';
export const BLOCK_BEGIN = '# BEGIN vmkit-hardening (managed by vmkit-agent; sshd keeps the first value it reads)';
export const BLOCK_END = '# END vmkit-hardening';
export const MATCH_MARKER = '# vmkit-hardening disabled: ';

/** The setting lines. ChallengeResponseAuthentication is a deprecated alias of
 * KbdInteractiveAuthentication on 8.7+; setting it too keeps older sshd (Ubuntu 20.04's
 * 8.2, Debian 11's 8.4) closed as well. */
function settings(rules: readonly PolicyRule[]): string[] {
  return rules.flatMap((r) => (r.keyword === 'kbdinteractiveauthentication' ? [r.line, 'ChallengeResponseAuthentication no'] : [r.line]));
}

export function dropInContent(rules: readonly PolicyRule[] = BASE_RULES): string {
  return [
    '# Managed by vmkit-agent (harden). Named to sort first: sshd keeps the first value it reads.',
    '# Edits are overwritten the next time the VM is hardened.',
    ...settings(rules),
    '',
  ].join('\n');
}

export function blockLines(rules: readonly PolicyRule[] = BASE_RULES): string[] {
  return [BLOCK_BEGIN, ...settings(rules), BLOCK_END];
}

/** sshd's defaults (OpenSSH 9.x) for keywords nobody set. */
const DEFAULTS: Readonly<Record<string, string>> = {
  permitrootlogin: 'prohibit-password',
  passwordauthentication: 'yes',
  kbdinteractiveauthentication: 'yes',
  x11forwarding: 'no',
  allowagentforwarding: 'yes',
  maxauthtries: '6',
  logingracetime: '120',
};

function valueOf(d: FlatDirective): string {
  // Algorithm lists and times keep their case-sensitive spelling; yes/no compare lower-cased.
  return d.args[0] ?? '';
}

function accepted(rules: readonly PolicyRule[], keyword: string, value: string): boolean {
  return rules.find((r) => r.keyword === keyword)?.accepts(value) ?? true;
}

/** A Match line that would undo a rule for the connections it matches. */
function isOffendingInMatch(rules: readonly PolicyRule[], d: FlatDirective): boolean {
  if (d.match === null) return false;
  const k = canonicalKeyword(d.keyword);
  return rules.some((r) => r.keyword === k) && !accepted(rules, k, valueOf(d));
}

export interface SshdFileWrite {
  path: string;
  content: string;
  /** True when the file does not exist yet. */
  create: boolean;
}

export interface SshdPlan {
  changed: boolean;
  placement: 'drop-in' | 'managed-block' | 'none';
  writes: SshdFileWrite[];
  /** "keyword=value" for the root user before, from the model. */
  before: string;
  after: string;
  neutralised: string[];
  problems: string[];
}

/** The first global value of each hardened keyword, in read order. */
function summary(rules: readonly PolicyRule[], directives: readonly FlatDirective[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const { keyword: k } of rules) {
    const d = directives.find((x) => x.match === null && canonicalKeyword(x.keyword) === k);
    out[k] = d ? valueOf(d).toLowerCase() : (DEFAULTS[k] ?? 'default');
  }
  const overrides = directives.filter((d) => isOffendingInMatch(rules, d));
  for (const d of overrides) {
    const k = canonicalKeyword(d.keyword);
    out[k] = `${out[k] ?? ''} (Match ${d.match?.join(' ') ?? ''}: ${valueOf(d).toLowerCase()})`;
  }
  return out;
}

function describe(s: Record<string, string>): string {
  return Object.entries(s)
    .map(([k, v]) => `${k} ${v}`)
    .join(', ');
}

/** True when, in this tree, the hardened values are the first global ones and no Match undoes them. */
export function treeIsHardened(tree: ConfigTree, rules: readonly PolicyRule[] = BASE_RULES): boolean {
  const { directives, problems } = flatten(tree);
  if (problems.length > 0) return false;
  if (directives.some((d) => isOffendingInMatch(rules, d))) return false;
  return rules.every((r) => {
    const d = directives.find((x) => x.match === null && canonicalKeyword(x.keyword) === r.keyword);
    return d !== undefined && r.accepts(valueOf(d));
  });
}

/** True when our own settings (drop-in or block) are the first global values read. */
function oursWin(rules: readonly PolicyRule[], tree: ConfigTree, ourFile: string, ourLines: (line: number) => boolean): boolean {
  const { directives } = flatten(tree);
  return rules.every(({ keyword: k }) => {
    const d = directives.find((x) => x.match === null && canonicalKeyword(x.keyword) === k);
    return d !== undefined && d.file === ourFile && ourLines(d.line);
  });
}

function withFile(tree: ConfigTree, path: string, content: string, globPattern?: string): ConfigTree {
  const files = new Map(tree.files);
  files.set(path, content);
  const globs = new Map(tree.globs);
  if (globPattern !== undefined) {
    const list = [...(globs.get(globPattern) ?? [])];
    if (!list.includes(path)) list.push(path);
    // glob(3) in sshd's C locale sorts by bytes.
    list.sort((a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b)));
    globs.set(globPattern, list);
  }
  return { ...tree, files, globs };
}

/** Removes an earlier managed block (anywhere in the file) so exactly one remains, at the top. */
function withoutBlock(content: string): string {
  const lines = splitLines(content);
  const begin = lines.findIndex((l) => l.text.startsWith('# BEGIN vmkit-hardening'));
  if (begin === -1) return content;
  const end = lines.findIndex((l, i) => i > begin && l.text.startsWith(BLOCK_END));
  if (end === -1) return content;
  return joinLines([...lines.slice(0, begin), ...lines.slice(end + 1)]);
}

function withBlockOnTop(rules: readonly PolicyRule[], content: string): string {
  const rest = withoutBlock(content);
  const eol = content === '' ? '\n' : dominantEol(content);
  return blockLines(rules).map((l) => l + eol).join('') + rest;
}

/** Global Include patterns of the main file that could hold our drop-in, in order. */
function dropInCandidates(tree: ConfigTree): string[] {
  const { directives } = flatten(tree);
  const out: string[] = [];
  for (const d of directives) {
    if (d.file !== tree.main || d.match !== null || d.keyword !== 'include') continue;
    for (const arg of d.args) {
      const pattern = resolveIncludePattern(arg, tree.sshDir);
      const dir = posix.dirname(pattern);
      if (hasGlobMagic(dir)) continue;
      const candidate = posix.join(dir, DROP_IN_NAME);
      if (globMatches(pattern, candidate)) out.push(pattern);
    }
  }
  return out;
}

function neutralise(rules: readonly PolicyRule[], tree: ConfigTree): { tree: ConfigTree; lines: string[] } {
  const { directives } = flatten(tree);
  const offending = directives.filter((d) => isOffendingInMatch(rules, d));
  if (offending.length === 0) return { tree, lines: [] };
  const files = new Map(tree.files);
  const lines: string[] = [];
  for (const file of new Set(offending.map((d) => d.file))) {
    const parsed = splitLines(files.get(file) ?? '');
    for (const d of offending.filter((x) => x.file === file)) {
      const l = parsed[d.line];
      if (!l) continue;
      lines.push(`${file}:${d.line + 1}: ${l.text.trim()}`);
      const indent = /^[ \t]*/.exec(l.text)?.[0] ?? '';
      parsed[d.line] = { text: indent + MATCH_MARKER + l.text.slice(indent.length), eol: l.eol };
    }
    files.set(file, joinLines(parsed));
  }
  return { tree: { ...tree, files }, lines };
}

/** Plans the sshd files for these rules. Pure: reads only the tree it is given. */
export function planSshd(tree: ConfigTree, rules: readonly PolicyRule[] = BASE_RULES): SshdPlan {
  const base = flatten(tree);
  const before = describe(summary(rules, base.directives));
  const plan: SshdPlan = {
    changed: false,
    placement: 'none',
    writes: [],
    before,
    after: before,
    neutralised: [],
    problems: [...base.problems],
  };
  if (!tree.files.has(tree.main)) {
    plan.problems.push(`${tree.main} does not exist`);
    return plan;
  }
  if (plan.problems.length > 0) return plan;

  const existingDropIn = dropInCandidates(tree)
    .map((p) => posix.join(posix.dirname(p), DROP_IN_NAME))
    .find((p) => tree.files.get(p) === dropInContent(rules));
  const mainContent = tree.files.get(tree.main) ?? '';

  if (treeIsHardened(tree, rules)) {
    const hasBlock = mainContent.startsWith(BLOCK_BEGIN);
    plan.placement = existingDropIn ? 'drop-in' : hasBlock ? 'managed-block' : 'none';
    return plan;
  }

  const { tree: cleaned, lines } = neutralise(rules, tree);
  plan.neutralised = lines;
  let candidate: ConfigTree | null = null;

  for (const pattern of dropInCandidates(cleaned)) {
    const path = posix.join(posix.dirname(pattern), DROP_IN_NAME);
    const next = withFile(cleaned, path, dropInContent(rules), pattern);
    if (oursWin(rules, next, path, () => true)) {
      candidate = next;
      plan.placement = 'drop-in';
      break;
    }
  }
  if (!candidate) {
    const content = withBlockOnTop(rules, cleaned.files.get(cleaned.main) ?? '');
    const next = withFile(cleaned, cleaned.main, content);
    if (oursWin(rules, next, cleaned.main, (line) => line < blockLines(rules).length)) {
      candidate = next;
      plan.placement = 'managed-block';
    }
  }
  if (!candidate || !treeIsHardened(candidate, rules)) {
    plan.problems.push('no placement of the hardened settings would win over the existing configuration');
    return plan;
  }
  for (const [path, content] of candidate.files) {
    const old = tree.files.get(path);
    if (old !== content) plan.writes.push({ path, content, create: old === undefined });
  }
  plan.changed = plan.writes.length > 0;
  plan.after = describe(summary(rules, flatten(candidate).directives));
  return plan;
}
