import { z } from 'zod';
import { errorBody, repoFullNameSchema } from '@vmkit/protocol';
import { defineTool, errorResult, expectOk, okResult } from '../tool.ts';

/** The public contract's six fields; everything else the REST answer carries rides along as additions. */
const CONTRACT_FIELDS = ['language', 'framework', 'buildpack', 'procfile_detected', 'dockerfile_detected', 'scan_id'] as const;

/** What the REST API answers to POST /api/scans, checked before it becomes the tool's result. */
const restScan = z.looseObject({
  scan_id: z.string(),
  language: z.string(),
  framework: z.string().nullable(),
  buildpack: z.string(),
  procfile_detected: z.boolean(),
  dockerfile_detected: z.boolean(),
});

export const scanRepo = defineTool({
  name: 'scan_repo',
  title: 'Scan a repository',
  description:
    'Scans a GitHub repository via the GitHub API and an AI classifier. Detects language, framework, and buildpack ' +
    'compatibility. Does not modify the repository. The repository must be connected to your VMKit workspace and, when ' +
    'VMKit reads GitHub as an App, the App must be installed on it. Returns language, framework, buildpack, ' +
    'procfile_detected, dockerfile_detected and scan_id (pass it to deploy), plus root (the app directory in a monorepo), ' +
    'evidence (the files that decided and why), confidence (0-1), reason, sha and cached (true when an earlier scan of the ' +
    'same commit answered). Classification uses a transparent rules table; a model classifier is consulted only if ' +
    'configured and the rules cannot decide.',
  inputSchema: z.object({
    repo: repoFullNameSchema.describe('Repository in owner/repo-name format. The GitHub App must be installed on this repo.'),
  }),
  outputSchema: z.looseObject({
    language: z.string().describe('Detected primary language (e.g. "python", "node", "ruby")'),
    framework: z.string().nullable().describe('Detected framework (e.g. "fastapi", "nextjs", "rails")'),
    buildpack: z.string().describe('Buildpack URI selected for this repo'),
    procfile_detected: z.boolean().describe('Whether a Procfile was found at the repo root'),
    dockerfile_detected: z.boolean().describe('Whether a Dockerfile was found at the repo root'),
    scan_id: z.string().describe('Id of the scan record; referenced in subsequent deploy calls'),
    root: z.string().nullable().optional(),
    evidence: z.array(z.object({ file: z.string(), reason: z.string() })).nullable().optional(),
    confidence: z.number().nullable().optional(),
    reason: z.string().nullable().optional(),
    sha: z.string().nullable().optional(),
    cached: z.boolean().optional(),
  }),
  annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: true },
  async run(args, ctx) {
    const res = await ctx.call({ method: 'POST', path: '/api/scans', body: { repo: args.repo } });
    const body = expectOk(res);
    const parsed = restScan.safeParse(body);
    if (!parsed.success) {
      return errorResult({ status: 500, headers: {}, body: errorBody('internal', 'The scan finished without a classification.') });
    }
    const scan = parsed.data;
    // Contract fields first, in the contract's order; the additions after them.
    const contract = Object.fromEntries(CONTRACT_FIELDS.map((k) => [k, scan[k]]));
    const { details: _details, status: _status, error_key: _errorKey, ...additions } = scan;
    return okResult({ ...contract, ...additions });
  },
});
