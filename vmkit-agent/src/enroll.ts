import { generateKeyPairSync } from 'node:crypto';
import { hostname } from 'node:os';
import { resolve } from 'node:path';
import { encodePublicKey, enrollResponseSchema, errorBodySchema, keyIdOf, privateKeyToPem, signingKeySchema } from '@vmkit/protocol';
import type { EnrollRequest } from '@vmkit/protocol';
import { ConfigError, fileExists, saveConfig } from './config.ts';
import type { AgentConfig, PinnedKey } from './config.ts';
import { writeFileAtomic } from './durable.ts';
import { checkTransport } from './transport-policy.ts';
import { MAX_CONTROL_PLANE_URLS, connectUrlOf } from './control-planes.ts';
import { trustCaFile } from './trust.ts';
import { prepareStateDir } from './state-dir.ts';
import { AGENT_VERSION } from './version.ts';
import { osDescription } from './host.ts';
import { readSshHostKeys } from './host-keys.ts';

export interface EnrollOptions {
  /**
   * The control plane's base URL; several for a fleet whose processes the agent reaches
   * each at its own address: enrollment asks them in turn until one answers, and the
   * daemon dials them all in turn (connect_url, then connect_urls).
   */
  urls: string[];
  /** PEM CA(s) trusted, instead of the system's roots, for https:// and wss:// (kept as ca_file). */
  caFile?: string;
  token: string;
  cpKeys: string[];
  configFile: string;
  stateDir: string;
  insecure: boolean;
  force: boolean;
  timeoutMs?: number;
  /** Where the SSH host public keys are read from; default /etc/ssh. */
  sshHostKeyDir?: string;
  /** Told about host key files that were not sent (unreadable, not a key). */
  onSkippedHostKey?: (file: string, reason: string) => void;
}

/** `KEY_ID:PUBKEY`; the key id itself contains a colon (`ed25519:...`), so split on the last one. */
export function parseCpKey(text: string): PinnedKey {
  const at = text.lastIndexOf(':');
  const candidate = { key_id: text.slice(0, at), public_key: text.slice(at + 1) };
  const parsed = signingKeySchema.safeParse(candidate);
  if (at <= 0 || !parsed.success) throw new ConfigError(`--cp-key ${JSON.stringify(text)} is not KEY_ID:PUBLIC_KEY (ed25519:<32 hex>:<43 base64url>)`);
  if (keyIdOf(parsed.data.public_key) !== parsed.data.key_id) throw new ConfigError(`--cp-key ${parsed.data.key_id} does not match its public key`);
  return parsed.data;
}

/** Answers from a proxy whose control plane is down: enrollment asks the next URL. */
const GATEWAY_DOWN = new Set([502, 503, 504]);

/** Refusals the operator must act on; printed as one line. */
export class EnrollError extends Error {
  override readonly name = 'EnrollError';
}

export async function enroll(opts: EnrollOptions): Promise<AgentConfig> {
  if (!opts.token) throw new ConfigError('--token is required');
  const expected = opts.cpKeys.map(parseCpKey);
  const given = [...new Set(opts.urls)];
  if (given.length === 0) throw new ConfigError('--url is required');
  if (given.length > MAX_CONTROL_PLANE_URLS) throw new ConfigError(`--url is given ${given.length} times; at most ${MAX_CONTROL_PLANE_URLS} control planes`);
  const bases: URL[] = [];
  for (const raw of given) {
    const base = checkTransport(raw, 'http', opts.insecure);
    if (!base.ok) throw new ConfigError(`--url: ${base.reason}`);
    bases.push(base.url);
  }
  if (!opts.force && (await fileExists(opts.configFile))) {
    throw new ConfigError(`config file ${opts.configFile} exists: this machine is already enrolled (pass --force to enroll again)`);
  }
  const caFile = opts.caFile === undefined ? undefined : resolve(opts.caFile);
  if (caFile !== undefined) await trustCaFile(caFile, '--ca-file');

  // The key pair lives in memory until the control plane accepted it: a refused
  // enrollment writes nothing.
  const { privateKey } = generateKeyPairSync('ed25519');
  const publicKey = encodePublicKey(privateKey);
  const hostKeys = await readSshHostKeys(opts.sshHostKeyDir);
  for (const s of hostKeys.skipped) opts.onSkippedHostKey?.(s.file, s.reason);
  const request: EnrollRequest = {
    token: opts.token,
    public_key: publicKey,
    hostname: hostname().slice(0, 253),
    os: await osDescription(),
    agent_version: AGENT_VERSION,
    // Omitted when there are none (no sshd here), as agents before this field did.
    ...(hostKeys.keys.length > 0 ? { ssh_host_keys: hostKeys.keys } : {}),
  };
  // One control plane answers; the others are asked only while none could be reached
  // (a refusal is the fleet's answer: every process reads the same database).
  const unreachable: string[] = [];
  let answered: { base: URL; res: Response } | undefined;
  for (const base of bases) {
    const endpoint = new URL('api/agents/enroll', base.href.endsWith('/') ? base : new URL(`${base.href}/`));
    try {
      const res = await fetch(endpoint, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'user-agent': `vmkit-agent/${AGENT_VERSION}` },
        body: JSON.stringify(request),
        signal: AbortSignal.timeout(opts.timeoutMs ?? 30_000),
        redirect: 'error',
      });
      // A load balancer or proxy with no live control plane behind it: try the next.
      if (GATEWAY_DOWN.has(res.status) && base !== bases[bases.length - 1]) {
        await res.body?.cancel();
        unreachable.push(`${endpoint.href}: HTTP ${res.status}`);
        continue;
      }
      answered = { base, res };
      break;
    } catch (err) {
      const cause = (err as { cause?: { message?: string; code?: string } }).cause;
      unreachable.push(`${endpoint.href}: ${cause?.message ?? (err as Error).message}`);
    }
  }
  if (!answered) throw new EnrollError(`cannot reach ${unreachable.length > 1 ? 'any control plane' : 'the control plane'}: ${unreachable.join('; ')}`);
  const { base, res } = answered;
  const text = await res.text();
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  if (!res.ok) {
    const refusal = errorBodySchema.safeParse(body);
    const msg = refusal.success ? refusal.data.message : text.slice(0, 200).replace(/\s+/g, ' ');
    const key = refusal.success ? ` (${refusal.data.error})` : '';
    throw new EnrollError(`enrollment refused by the control plane: HTTP ${res.status}${key}: ${msg}`);
  }
  const parsed = enrollResponseSchema.safeParse(body);
  if (!parsed.success) throw new EnrollError(`the control plane answered enrollment with an unexpected body: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
  const answer = parsed.data;
  for (const k of answer.signing_keys) {
    if (keyIdOf(k.public_key) !== k.key_id) throw new EnrollError(`the control plane announced key ${k.key_id} whose id does not match its public key`);
  }
  const connect = checkTransport(answer.connect_url, 'ws', opts.insecure);
  if (!connect.ok) throw new EnrollError(`the control plane's connect_url is refused: ${connect.reason}`);
  // The other processes' connect URLs, as each would announce its own (same host, ws(s), /agent/v1/connect).
  const others = [...new Set(bases.filter((b) => b !== base).map((b) => connectUrlOf(b.href)))].filter((u) => u !== answer.connect_url);

  // With --cp-key the operator vouches for the keys out of band: pin exactly those,
  // and refuse if the control plane does not hold them (someone in the middle?).
  let pinned = answer.signing_keys;
  if (expected.length > 0) {
    for (const e of expected) {
      if (!answer.signing_keys.some((k) => k.key_id === e.key_id && k.public_key === e.public_key)) {
        throw new EnrollError(`the control plane's signing keys do not include --cp-key ${e.key_id}; refusing to pin them`);
      }
    }
    pinned = expected;
  }

  const paths = await prepareStateDir(opts.stateDir);
  await writeFileAtomic(paths.privateKey, privateKeyToPem(privateKey), 0o600);
  await writeFileAtomic(paths.publicKey, `${publicKey}\n`, 0o600);
  const config: AgentConfig = {
    version: 1,
    agent_id: answer.agent_id,
    instance_id: answer.instance_id,
    control_plane_url: base.href,
    connect_url: answer.connect_url,
    ...(others.length > 0 ? { connect_urls: others } : {}),
    ...(caFile !== undefined ? { ca_file: caFile } : {}),
    signing_keys: pinned,
    state_dir: opts.stateDir,
    ...(opts.insecure ? { insecure: true } : {}),
    enrolled_at: new Date().toISOString(),
  };
  await saveConfig(opts.configFile, config);
  return config;
}
