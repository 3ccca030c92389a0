import { z } from 'zod';
import type { FallbackClassifier, ModelInput, ModelVerdict } from './classify.ts';
import { RULES } from './rules.ts';
import type { Language } from './rules.ts';

const LANGUAGES = [...new Set(RULES.map((r) => r.language))] as Language[];
const FRAMEWORKS = [...new Set(RULES.map((r) => r.framework).filter((f): f is string => f !== null))];

export interface ModelClassifierOptions {
  /** Full URL of an OpenAI-compatible chat completions endpoint (…/v1/chat/completions). */
  url: string;
  model: string;
  apiKey?: string | undefined;
  timeoutMs?: number;
}

/** Reads VMKIT_CLASSIFIER_URL / _MODEL / _API_KEY; null (off) unless URL and model are both set. */
export function modelClassifierFromEnv(env: NodeJS.ProcessEnv = process.env): ModelClassifier | null {
  const url = env.VMKIT_CLASSIFIER_URL;
  const model = env.VMKIT_CLASSIFIER_MODEL;
  if (!url || !model) return null;
  return new ModelClassifier({ url, model, apiKey: env.VMKIT_CLASSIFIER_API_KEY || undefined });
}

const chatCompletion = z.object({
  choices: z.array(z.object({ message: z.object({ content: z.string().nullable() }) })).min(1),
});

const verdictSchema = z.object({
  language: z.string(),
  framework: z.string().nullable().optional(),
  confidence: z.number().min(0).max(1).optional(),
  reason: z.string().optional(),
});

/**
 * The optional model-based classifier: one chat completion asking for a JSON verdict
 * about file names and manifest excerpts. Its answer is constrained to the languages
 * and frameworks the rules know, so it can never invent a buildpack.
 */
export class ModelClassifier implements FallbackClassifier {
  readonly name: string;
  readonly #opts: ModelClassifierOptions;

  constructor(opts: ModelClassifierOptions) {
    const u = new URL(opts.url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error('VMKIT_CLASSIFIER_URL must be an http(s) URL');
    this.#opts = opts;
    this.name = opts.model;
  }

  async classify(input: ModelInput): Promise<ModelVerdict | null> {
    const system =
      'You classify a source repository for deployment. Answer with one JSON object and nothing else: ' +
      `{"language": one of ${JSON.stringify([...LANGUAGES, 'unknown'])}, ` +
      `"framework": one of ${JSON.stringify(FRAMEWORKS)} or null, "confidence": a number from 0 to 1, "reason": one sentence}.`;
    const user = [
      `Repository: ${input.repo}`,
      `Files at the root: ${input.files.join(', ')}`,
      ...input.manifests.map((m) => `--- ${m.path} ---\n${m.content}`),
    ].join('\n');
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (this.#opts.apiKey) headers.authorization = `Bearer ${this.#opts.apiKey}`;
    const res = await fetch(this.#opts.url, {
      method: 'POST',
      headers,
      body: JSON.stringify({
        model: this.#opts.model,
        temperature: 0,
        response_format: { type: 'json_object' },
        messages: [
          { role: 'system', content: system },
          { role: 'user', content: user },
        ],
      }),
      signal: AbortSignal.timeout(this.#opts.timeoutMs ?? 20_000),
    });
    if (!res.ok) throw new Error(`the classifier endpoint answered ${res.status}`);
    const completion = chatCompletion.parse(await res.json());
    const content = completion.choices[0]?.message.content ?? '';
    const json = /\{[\s\S]*\}/.exec(content)?.[0];
    if (!json) return null;
    const parsed = verdictSchema.safeParse(JSON.parse(json));
    if (!parsed.success) return null;
    const v = parsed.data;
    const language = (LANGUAGES as string[]).includes(v.language) ? (v.language as Language) : 'unknown';
    const framework = v.framework && FRAMEWORKS.includes(v.framework) ? v.framework : null;
    return { language, framework, confidence: v.confidence ?? 0.5, reason: (v.reason ?? 'no reason given').slice(0, 300) };
  }
}
