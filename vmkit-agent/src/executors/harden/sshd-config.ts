/**
 * sshd_config as sshd reads it (servconf.c): one directive per line, keyword
 * case-insensitive, separated from its arguments by whitespace or one `=`, trailing
 * whitespace (including `\r`) ignored, `#` lines are comments. `Include` splices
 * files in glob order; a `Match` lasts until the next `Match` or the end of the file
 * it is in (sshd restores the Match state after each included file).
 */
import { posix } from 'node:path';

export interface ConfigLine {
  /** The line without its line ending. */
  text: string;
  /** The line ending as found ('' for a last line without one). */
  eol: '\n' | '\r\n' | '';
}

export interface Directive {
  /** Lower-cased keyword. */
  keyword: string;
  args: string[];
}

/** Splits a file into lines, keeping each line's ending so a rewrite is byte-exact. */
export function splitLines(content: string): ConfigLine[] {
  const lines: ConfigLine[] = [];
  let start = 0;
  while (start < content.length) {
    const nl = content.indexOf('\n', start);
    if (nl === -1) {
      lines.push({ text: content.slice(start), eol: '' });
      break;
    }
    const crlf = nl > start && content[nl - 1] === '\r';
    lines.push({ text: content.slice(start, crlf ? nl - 1 : nl), eol: crlf ? '\r\n' : '\n' });
    start = nl + 1;
  }
  return lines;
}

export function joinLines(lines: readonly ConfigLine[]): string {
  return lines.map((l) => l.text + l.eol).join('');
}

/** The line ending a file mostly uses, so inserted lines match their neighbours. */
export function dominantEol(content: string): '\n' | '\r\n' {
  const crlf = content.split('\r\n').length - 1;
  const lf = content.split('\n').length - 1 - crlf;
  return crlf > lf ? '\r\n' : '\n';
}

/** Parses one line into a directive, or null for blanks and comments. */
export function parseDirective(text: string): Directive | null {
  const line = text.replace(/^[ \t]+/, '').replace(/[ \t\r\n\f]+$/, '');
  if (line === '' || line.startsWith('#')) return null;
  const m = /^([^ \t=]+)[ \t]*(?:=[ \t]*)?(.*)$/.exec(line);
  if (!m) return null;
  return { keyword: (m[1] ?? '').toLowerCase(), args: splitArgs(m[2] ?? '') };
}

/** Splits arguments on whitespace, honouring double quotes as sshd's argv_split does. */
export function splitArgs(rest: string): string[] {
  const args: string[] = [];
  let i = 0;
  while (i < rest.length) {
    while (i < rest.length && (rest[i] === ' ' || rest[i] === '\t')) i++;
    if (i >= rest.length) break;
    if (rest[i] === '#') break; // a trailing comment
    let arg = '';
    if (rest[i] === '"') {
      i++;
      while (i < rest.length && rest[i] !== '"') arg += rest[i++];
      i++;
    } else {
      while (i < rest.length && rest[i] !== ' ' && rest[i] !== '\t') arg += rest[i++];
    }
    args.push(arg);
  }
  return args;
}

/** glob(3) for one path component: `*`, `?`, `[...]`; a leading dot needs an explicit dot. */
export function globComponentToRegExp(pattern: string): RegExp {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i] ?? '';
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end === -1) re += '\\[';
      else {
        let body = pattern.slice(i + 1, end);
        if (body.startsWith('!')) body = '^' + body.slice(1);
        re += '[' + body.replace(/\\/g, '\\\\') + ']';
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  const noDot = pattern.startsWith('.') ? '' : '(?!\\.)';
  return new RegExp('^' + noDot + re + '$');
}

export function hasGlobMagic(s: string): boolean {
  return /[*?[]/.test(s);
}

/** Whether a path would be matched by an Include pattern (both absolute). */
export function globMatches(pattern: string, path: string): boolean {
  const p = pattern.split('/');
  const f = path.split('/');
  if (p.length !== f.length) return false;
  return p.every((seg, i) => (hasGlobMagic(seg) ? globComponentToRegExp(seg).test(f[i] ?? '') : seg === f[i]));
}

/** sshd resolves a relative Include against its configuration directory (no ~ expansion server-side). */
export function resolveIncludePattern(pattern: string, sshDir: string): string {
  return posix.isAbsolute(pattern) ? posix.normalize(pattern) : posix.join(sshDir, pattern);
}

/** The files of a configuration tree as a snapshot holds them. */
export interface ConfigTree {
  /** The main file, as sshd is given it with `-f`. */
  main: string;
  sshDir: string;
  /** Every file read: path → content. A missing Include target simply does not appear. */
  files: ReadonlyMap<string, string>;
  /** Every Include pattern seen → the files it expanded to, sorted as glob(3) sorts. */
  globs: ReadonlyMap<string, readonly string[]>;
}

export interface FlatDirective extends Directive {
  file: string;
  /** Index of the line in its file. */
  line: number;
  /** The `Match` arguments in force (`['all']` after `Match all`), or null in the global context. */
  match: string[] | null;
}

export interface FlattenResult {
  directives: FlatDirective[];
  /** Files in the order sshd reads them. */
  order: string[];
  problems: string[];
}

const MAX_INCLUDE_DEPTH = 16; // sshd's own limit (SERVCONF_MAX_DEPTH)

/** Directives in the order sshd reads them, each tagged with its Match context. */
export function flatten(tree: ConfigTree): FlattenResult {
  const out: FlattenResult = { directives: [], order: [], problems: [] };
  walk(tree, tree.main, null, 0, out);
  return out;
}

function walk(tree: ConfigTree, file: string, match: string[] | null, depth: number, out: FlattenResult): void {
  const content = tree.files.get(file);
  if (content === undefined) {
    out.problems.push(`${file} could not be read`);
    return;
  }
  out.order.push(file);
  let current = match;
  splitLines(content).forEach((l, index) => {
    const d = parseDirective(l.text);
    if (!d) return;
    if (d.keyword === 'match') {
      // `Match all` is still a Match: sshd applies its lines on top of the global values
      // for every connection, so they override the hardening like any other Match would.
      current = d.args;
      out.directives.push({ ...d, file, line: index, match: current });
      return;
    }
    out.directives.push({ ...d, file, line: index, match: current });
    if (d.keyword === 'include') {
      if (depth + 1 > MAX_INCLUDE_DEPTH) {
        out.problems.push(`${file}: Include nested deeper than ${MAX_INCLUDE_DEPTH}`);
        return;
      }
      for (const arg of d.args) {
        const pattern = resolveIncludePattern(arg, tree.sshDir);
        const targets = tree.globs.get(pattern) ?? [];
        for (const target of targets) walk(tree, target, current, depth + 1, out);
      }
    }
  });
}

/** Deprecated keyword aliases (lower-cased): ChallengeResponseAuthentication means KbdInteractiveAuthentication since OpenSSH 8.7. */
export const ALIASES: Readonly<Record<string, string>> = {
  challengeresponseauthentication: 'kbdinteractiveauthentication',
};

export function canonicalKeyword(keyword: string): string {
  return ALIASES[keyword] ?? keyword;
}
