import { sign, verify } from 'node:crypto';
import { z } from 'zod';
import { canonicalJson } from './canonical.ts';
import { keyIdSchema, signatureSchema } from './key-schemas.ts';
import type { PinnedKeys } from './commands.ts';
import type { SigningKeyPair } from './keys.ts';
import { lazySchema } from './lazy.ts';

/**
 * Agent releases: one single-file executable per platform, described by a manifest the
 * control plane signs with its command-signing key. Installers and updating agents check
 * a download against a manifest whose signature verifies under a key they pinned out of
 * band, so neither a mirror nor the network can hand them another binary.
 */

/** Platforms an agent release names. Only linux-x64 is built today; linux-arm64 is next. */
export const AGENT_PLATFORMS = ['linux-x64', 'linux-arm64'] as const;
export type AgentPlatform = (typeof AGENT_PLATFORMS)[number];
export const agentPlatformSchema = z.enum(AGENT_PLATFORMS);

/**
 * A release version: semver without build metadata (`0.1.0`, `0.2.0-rc.1`). Kept to
 * characters that are safe in a path segment, a URL and a shell word unquoted.
 */
export const AGENT_VERSION_PATTERN = /^(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})\.(0|[1-9]\d{0,8})(?:-([0-9A-Za-z-]{1,20}(?:\.[0-9A-Za-z-]{1,20}){0,4}))?$/;
export const agentVersionSchema = z.string().max(64).regex(AGENT_VERSION_PATTERN, 'must be a version like 1.2.3 or 1.2.3-rc.1');

/** Largest artifact a manifest may announce (a Node 24 executable is about 110 MB). */
export const MAX_AGENT_ARTIFACT_BYTES = 512 * 1024 * 1024;

const sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits (sha-256)');
const artifactSize = z.number().int().positive().max(MAX_AGENT_ARTIFACT_BYTES);

/** What the signature covers. */
export const agentReleaseBodySchema = lazySchema(() =>
  z.strictObject({
    version: agentVersionSchema,
    platform: agentPlatformSchema,
    sha256: sha256Hex,
    size: artifactSize,
  }),
);
export type AgentReleaseBody = z.infer<typeof agentReleaseBodySchema>;

/** `GET /agent/releases/{version}/{platform}`: the body, the signing key's id and the signature. */
export const agentReleaseManifestSchema = lazySchema(() =>
  agentReleaseBodySchema.extend({
    key_id: keyIdSchema,
    signature: signatureSchema,
  }),
);
export type AgentReleaseManifest = z.infer<typeof agentReleaseManifestSchema>;

/**
 * `agent.update`: install this release and restart on it. The agent downloads `url`
 * only from its own control plane (same origin as its enrollment, exactly the release's
 * path), checks size, sha-256 and the manifest's signature under its pinned keys,
 * stages it beside the running version, switches `current` and restarts; a version
 * that does not connect in time is rolled back by the agent itself. An older version
 * than the running one is refused unless `allow_downgrade` is true.
 */
export const agentUpdateParams = lazySchema(() =>
  z.strictObject({
    version: agentVersionSchema,
    platform: agentPlatformSchema,
    url: z.string().url().max(2048),
    sha256: sha256Hex,
    size: artifactSize,
    allow_downgrade: z.boolean().optional(),
  }),
);
export type AgentUpdateParams = z.infer<typeof agentUpdateParams>;

/** Domain separation: a release signature can never pass for a command's, nor the reverse. */
export const RELEASE_SIGNING_CONTEXT = 'vmkit-agent-release-v1\n';

/**
 * The exact bytes signed: the context line, then the RFC 8785 text of the four fields.
 * Every field is restricted to characters JSON never escapes, so a shell script can
 * rebuild the same bytes with printf (scripts/install-agent.sh does).
 */
export function releaseSigningBytes(body: AgentReleaseBody): Buffer {
  const { version, platform, sha256, size } = agentReleaseBodySchema.parse({ version: body.version, platform: body.platform, sha256: body.sha256, size: body.size });
  return Buffer.from(RELEASE_SIGNING_CONTEXT + canonicalJson({ version, platform, sha256, size }), 'utf8');
}

export function signReleaseManifest(key: SigningKeyPair, body: AgentReleaseBody): AgentReleaseManifest {
  const signature = sign(null, releaseSigningBytes(body), key.privateKey).toString('base64url');
  return { version: body.version, platform: body.platform, sha256: body.sha256, size: body.size, key_id: key.keyId, signature };
}

export type ReleaseVerdict = { ok: true; manifest: AgentReleaseManifest } | { ok: false; reason: 'malformed' | 'unknown_key' | 'bad_signature'; detail: string };

/** Checks a manifest's shape and its signature under one of the pinned keys. */
export function verifyReleaseManifest(value: unknown, pinned: PinnedKeys): ReleaseVerdict {
  const parsed = agentReleaseManifestSchema.safeParse(value);
  if (!parsed.success) return { ok: false, reason: 'malformed', detail: z.prettifyError(parsed.error) };
  const m = parsed.data;
  const key = pinned.get(m.key_id);
  if (!key) return { ok: false, reason: 'unknown_key', detail: `the manifest is signed by ${m.key_id}, which is not pinned` };
  if (!verify(null, releaseSigningBytes(m), key, Buffer.from(m.signature, 'base64url'))) {
    return { ok: false, reason: 'bad_signature', detail: `the manifest signature does not verify under ${m.key_id}` };
  }
  return { ok: true, manifest: m };
}

/** The artifact's path under a control plane's base URL: `agent/releases/<version>/<platform>/vmkit-agent`. */
export function releaseArtifactPath(version: string, platform: string): string {
  return `agent/releases/${version}/${platform}/vmkit-agent`;
}

/** The manifest's path under a control plane's base URL. */
export function releaseManifestPath(version: string, platform: string): string {
  return `agent/releases/${version}/${platform}`;
}

/**
 * Semver precedence (build metadata is not allowed): negative when a < b. Throws on a
 * string that is not a release version, so a malformed one is never "older".
 */
export function compareAgentVersions(a: string, b: string): number {
  const pa = AGENT_VERSION_PATTERN.exec(a);
  const pb = AGENT_VERSION_PATTERN.exec(b);
  if (!pa || !pb) throw new TypeError(`not a release version: ${JSON.stringify(pa ? b : a)}`);
  for (let i = 1; i <= 3; i++) {
    const d = Number(pa[i]) - Number(pb[i]);
    if (d !== 0) return Math.sign(d);
  }
  const ra = pa[4];
  const rb = pb[4];
  // A pre-release sorts before its release: 1.0.0-rc.1 < 1.0.0.
  if (ra === undefined || rb === undefined) return ra === rb ? 0 : ra === undefined ? 1 : -1;
  const ia = ra.split('.');
  const ib = rb.split('.');
  for (let i = 0; i < Math.max(ia.length, ib.length); i++) {
    const x = ia[i];
    const y = ib[i];
    if (x === undefined || y === undefined) return x === undefined ? -1 : 1;
    if (x === y) continue;
    const nx = /^\d+$/.test(x);
    const ny = /^\d+$/.test(y);
    if (nx && ny) return Math.sign(Number(x) - Number(y));
    if (nx !== ny) return nx ? -1 : 1; // numeric identifiers sort before alphanumeric ones
    return x < y ? -1 : 1;
  }
  return 0;
}

/** The platform of the running process, or undefined where no agent release exists. */
export function platformOf(os: string, arch: string): AgentPlatform | undefined {
  if (os !== 'linux') return undefined;
  if (arch === 'x64') return 'linux-x64';
  if (arch === 'arm64') return 'linux-arm64';
  return undefined;
}
