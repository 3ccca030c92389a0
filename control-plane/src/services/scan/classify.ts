import { buildpackFor } from './buildpacks.ts';
import type { RepoView } from './repo-view.ts';
import { RootContext } from './root-context.ts';
import type { Evidence } from './root-context.ts';
import { RULES } from './rules.ts';
import type { Language, Role, Rule } from './rules.ts';

export type { Evidence } from './root-context.ts';

/**
 * Where deployable apps are looked for, in this order, after the repository root:
 * every directory under each of APP_PARENT_DIRS (sorted by path), then each of
 * APP_DIRS that exists. The first candidate that is deployable (a web or static rule
 * matches, or its Procfile declares a `web` process) is the app; path order breaks ties.
 */
export const APP_PARENT_DIRS = ['apps', 'services', 'packages'] as const;
export const APP_DIRS = ['api', 'backend', 'server', 'web', 'frontend', 'app'] as const;
/** Candidate roots examined at most, so a repo with thousands of packages stays cheap. */
export const MAX_CANDIDATES = 40;

export interface RuleMatch {
  rule: Rule;
  root: string;
  evidence: Evidence[];
  confidence: number;
}

export interface Classification {
  language: Language | 'unknown';
  framework: string | null;
  buildpack: string;
  buildpack_note: string | null;
  procfile_detected: boolean;
  dockerfile_detected: boolean;
  /** The app's directory: '.' for the repository root. */
  root: string;
  evidence: Evidence[];
  /** 0..1: the winning rule's confidence, lowered when other candidates competed. */
  confidence: number;
  reason: string;
  /** Which classifier decided: the rules table, the optional model, or neither. */
  classifier: 'rules' | 'model' | 'none';
  rule: string | null;
}

/** What the optional model classifier sees: names and small manifest excerpts, never the whole repo. */
export interface ModelInput {
  repo: string;
  files: string[];
  manifests: { path: string; content: string }[];
}

export interface ModelVerdict {
  language: Language | 'unknown';
  framework: string | null;
  confidence: number;
  reason: string;
}

/** A classifier for repos the rules cannot decide; off unless configured. */
export interface FallbackClassifier {
  readonly name: string;
  classify(input: ModelInput): Promise<ModelVerdict | null>;
}

interface RootVerdict {
  root: string;
  best: RuleMatch | null;
  others: RuleMatch[];
  procfileWeb: string | null;
  workspace: Evidence | null;
  deployable: boolean;
}

/** Every rule that matches at one root, best first (deployable role, confidence, table order). */
export async function matchRules(ctx: RootContext): Promise<RuleMatch[]> {
  const matches: RuleMatch[] = [];
  for (const rule of RULES) {
    const evidence: Evidence[] = [];
    let ok = true;
    for (const check of rule.needs) {
      const ev = await ctx.evaluate(check);
      if (!ev) {
        ok = false;
        break;
      }
      evidence.push(...ev);
    }
    if (!ok) continue;
    let confidence = rule.confidence;
    for (const check of rule.boosts ?? []) {
      const ev = await ctx.evaluate(check);
      if (ev) {
        evidence.push(...ev);
        confidence = Math.min(0.99, confidence + 0.02);
      }
    }
    matches.push({ rule, root: ctx.root, evidence: dedupe(evidence), confidence: round(confidence) });
  }
  const order = (r: Role): number => (r === 'library' ? 1 : 0);
  return matches
    .map((m, i) => ({ m, i }))
    .sort((a, b) => order(a.m.rule.role) - order(b.m.rule.role) || b.m.confidence - a.m.confidence || a.i - b.i)
    .map(({ m }) => m);
}

async function judgeRoot(view: RepoView, root: string): Promise<RootVerdict> {
  const ctx = new RootContext(view, root);
  const [best, ...others] = await matchRules(ctx);
  const procfileWeb = await ctx.procfileWeb();
  const workspace = root === '' ? await ctx.workspaceMarker() : null;
  let deployable = (best !== undefined && best.rule.role !== 'library') || procfileWeb !== null;
  // A monorepo's root with only a generic match (a start script that runs every package)
  // is not the app; its apps are, unless a root Procfile says how to run it from there.
  // It stays the fallback if no app dir is deployable.
  if (workspace && best?.rule.framework === null && procfileWeb === null) deployable = false;
  return { root, best: best ?? null, others, procfileWeb, workspace, deployable };
}

/** Candidate app roots after the repository root, in the documented order. */
export async function candidateRoots(view: RepoView): Promise<string[]> {
  const out: string[] = [];
  const top = await view.list('');
  for (const parent of APP_PARENT_DIRS) {
    if (!top.some((e) => e.path === parent && e.type === 'dir')) continue;
    for (const e of await view.list(parent)) if (e.type === 'dir') out.push(e.path);
  }
  for (const d of APP_DIRS) if (top.some((e) => e.path === d && e.type === 'dir')) out.push(d);
  return out.slice(0, MAX_CANDIDATES);
}

export interface ClassifyOptions {
  repo: string;
  fallback?: FallbackClassifier | null;
}

/** Classifies one commit of a repository: picks the app root, the rule, the buildpack, and says why. */
export async function classifyRepo(view: RepoView, opts: ClassifyOptions): Promise<Classification> {
  const top = await view.list('');
  const procfile = top.some((e) => e.path === 'Procfile' && e.type === 'file');
  const dockerfile = top.some((e) => e.path === 'Dockerfile' && e.type === 'file');
  const rootVerdict = await judgeRoot(view, '');

  let chosen: RootVerdict | null = null;
  let reason: string;
  let competing: RootVerdict[] = [];
  if (rootVerdict.deployable) {
    chosen = rootVerdict;
    reason = `The repository root is the app: ${describe(rootVerdict)}.`;
  } else {
    const verdicts: RootVerdict[] = [];
    for (const root of await candidateRoots(view)) verdicts.push(await judgeRoot(view, root));
    const deployable = verdicts.filter((v) => v.deployable);
    chosen = deployable[0] ?? null;
    competing = deployable.slice(1);
    const why = rootVerdict.workspace
      ? `the root is a workspace (${rootVerdict.workspace.file} ${rootVerdict.workspace.reason}) without an app of its own`
      : 'the root holds no deployable app';
    if (chosen) {
      reason =
        `${capitalize(why)}; ${chosen.root} is the first deployable candidate in the order ` +
        `root, ${APP_PARENT_DIRS.map((d) => `${d}/*`).join(', ')}, ${APP_DIRS.join(', ')} (path order within each): ${describe(chosen)}.`;
      if (competing.length > 0) reason += ` Also deployable: ${competing.map((v) => `${v.root} (${v.best?.rule.id ?? 'Procfile'})`).join(', ')}.`;
    } else {
      reason = `${capitalize(why)}, and no app directory (${APP_PARENT_DIRS.map((d) => `${d}/*`).join(', ')}, ${APP_DIRS.join(', ')}) is deployable.`;
    }
  }

  const base = { procfile_detected: procfile, dockerfile_detected: dockerfile };
  if (chosen?.best) {
    const m = chosen.best;
    const evidence = [...m.evidence];
    if (chosen.procfileWeb !== null) evidence.push({ file: prefix(chosen.root, 'Procfile'), reason: `declares a web process: ${chosen.procfileWeb.slice(0, 120)}` });
    let confidence = m.confidence;
    // Another language's deployable app at the same root, nearly as likely: say so and trust less.
    const rival = chosen.others.find((o) => o.rule.role !== 'library' && o.rule.language !== m.rule.language && o.confidence >= m.confidence - 0.1);
    if (rival) {
      confidence -= 0.1;
      reason += ` ${rival.rule.id} also matched at the same root (${rival.evidence[0]?.file ?? ''}); ${m.rule.id} wins on ${rival.confidence < m.confidence ? 'confidence' : 'rule order'}.`;
    }
    if (competing.length > 0) confidence *= 0.85;
    return {
      ...identity(m.rule.language, m.rule.framework),
      ...base,
      root: chosen.root === '' ? '.' : chosen.root,
      evidence,
      confidence: round(confidence),
      reason,
      classifier: 'rules',
      rule: m.rule.id,
    };
  }

  if (chosen) {
    // Deployable through its Procfile alone, with no language rule matching.
    return unknown(base, chosen.root, reason, [{ file: prefix(chosen.root, 'Procfile'), reason: `declares a web process: ${chosen.procfileWeb ?? ''}` }], 0.2);
  }

  if (opts.fallback) {
    const verdict = await askModel(view, opts, rootVerdict);
    if (verdict) {
      return {
        ...identity(verdict.language, verdict.framework),
        ...base,
        root: '.',
        evidence: [{ file: '.', reason: `model classifier ${opts.fallback.name}: ${verdict.reason}` }],
        // A model's answer is never as sure as a rule's evidence.
        confidence: round(Math.min(0.6, Math.max(0, verdict.confidence))),
        reason: `${reason} The rules could not decide; the model classifier answered.`,
        classifier: 'model',
        rule: null,
      };
    }
  }

  // Nothing deployable: report what the root is (a library-only match) rather than nothing.
  if (rootVerdict.best) {
    const m = rootVerdict.best;
    return {
      ...identity(m.rule.language, m.rule.framework),
      ...base,
      root: '.',
      evidence: m.evidence,
      confidence: round(Math.min(m.confidence, 0.4)),
      reason: `${reason} The root looks like a ${m.rule.language} ${m.rule.role === 'library' ? 'package without a start command' : 'project'} (${m.rule.id}).`,
      classifier: 'rules',
      rule: m.rule.id,
    };
  }
  return unknown(base, '', `${reason} No rule recognised the repository.`, [], 0);
}

function unknown(
  base: { procfile_detected: boolean; dockerfile_detected: boolean },
  root: string,
  reason: string,
  evidence: Evidence[],
  confidence: number,
): Classification {
  const bp = buildpackFor('unknown');
  return {
    language: 'unknown',
    framework: null,
    buildpack: bp.uri,
    buildpack_note: base.dockerfile_detected ? 'A Dockerfile is at the root; build with it.' : bp.note,
    ...base,
    root: root === '' ? '.' : root,
    evidence,
    confidence,
    reason,
    classifier: 'none',
    rule: null,
  };
}

/** Root file names and small excerpts of the manifests present, for the model. */
async function askModel(view: RepoView, opts: ClassifyOptions, root: RootVerdict): Promise<ModelVerdict | null> {
  const top = await view.list('');
  const files = top.slice(0, 200).map((e) => (e.type === 'dir' ? `${e.path}/` : e.path));
  const manifests: ModelInput['manifests'] = [];
  const wanted = new Set(root.best?.evidence.map((e) => e.file) ?? []);
  for (const e of top) {
    if (e.type !== 'file' || manifests.length >= 6) continue;
    if (wanted.has(e.path) || /^(package\.json|requirements\.txt|pyproject\.toml|Gemfile|go\.mod|composer\.json|pom\.xml|build\.gradle(\.kts)?|mix\.exs|Cargo\.toml|Procfile|Dockerfile|README(\.md)?)$/i.test(e.path)) {
      const text = await view.read(e.path);
      if (text !== null) manifests.push({ path: e.path, content: text.slice(0, 4000) });
    }
  }
  try {
    return (await opts.fallback?.classify({ repo: opts.repo, files, manifests })) ?? null;
  } catch {
    // The model is an optional helper: its failure leaves the rules' answer standing.
    return null;
  }
}

function describe(v: RootVerdict): string {
  if (v.best && v.best.rule.role !== 'library') {
    const files = [...new Set(v.best.evidence.map((e) => e.file))].slice(0, 3).join(', ');
    return `${v.best.rule.id} (${files})`;
  }
  return `a Procfile web process${v.best ? ` in a ${v.best.rule.language} project` : ''}`;
}

function prefix(root: string, rel: string): string {
  return root === '' ? rel : `${root}/${rel}`;
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** What a repo is and how it builds: the contract's language, framework and buildpack. */
function identity(language: Classification['language'], framework: string | null) {
  const bp = buildpackFor(language);
  return { language, framework, buildpack: bp.uri, buildpack_note: bp.note };
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

function dedupe(evidence: Evidence[]): Evidence[] {
  const seen = new Set<string>();
  return evidence.filter((e) => {
    const k = `${e.file}\0${e.reason}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}
