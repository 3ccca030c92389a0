import { generateKeyPairSync } from 'node:crypto';
import { hostname } from 'node:os';
import { encodePublicKey, enrollResponseSchema, errorBodySchema, keyIdOf, privateKeyToPem, signingKeySchema } from '@vmkit/protocol';
import type { EnrollRequest } from '@vmkit/protocol';
import { ConfigError, fileExists, saveConfig } from './config.ts';
import type { AgentConfig, PinnedKey } from './config.ts';
import { writeFileAtomic } from './durable.ts';
import { checkTransport } from './transport-policy.ts';
import { prepareStateDir } from './state-dir.ts';
import { AGENT_VERSION } from './version.ts';
import { osDescription } from './host.ts';
import { readSshHostKeys } from './host-keys.ts';

export interface EnrollOptions {
  url: string;
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

/** Refusals the operator must act on; printed as one line. */
export class EnrollError extends Error {
  override readonly name = 'EnrollError';
}

export async function enroll(opts: EnrollOptions): Promise<AgentConfig> {
  if (!opts.token) throw new ConfigError('--token is required');
  const expected = opts.cpKeys.map(parseCpKey);
  const base = checkTransport(opts.url, 'http', opts.insecure);
  if (!base.ok) throw new ConfigError(`--url: ${base.reason}`);
  if (!opts.force && (await fileExists(opts.configFile))) {
    throw new ConfigError(`config file ${opts.configFile} exists: this machine is already enrolled (pass --force to enroll again)`);
  }

  // The key pair lives in memory until the control plane accepted it: a refused
  // enrollment writes nothing.
  const { privateKey } = generateKeyPairSync('ed25519');
  const publicKey = encodePublicKey(privateKey);
  const endpoint = new URL('api/agents/enroll', base.url.href.endsWith('/') ? base.url : new URL(`${base.url.href}/`));
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
  let res: Response;
  try {
    res = await fetch(endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'user-agent': `vmkit-agent/${AGENT_VERSION}` },
      body: JSON.stringify(request),
      signal: AbortSignal.timeout(opts.timeoutMs ?? 30_000),
      redirect: 'error',
    });
  } catch (err) {
    const cause = (err as { cause?: { message?: string } }).cause?.message;
    throw new EnrollError(`cannot reach ${endpoint.href}: ${cause ?? (err as Error).message}`);
  }
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
    control_plane_url: base.url.href,
    connect_url: answer.connect_url,
    signing_keys: pinned,
    state_dir: opts.stateDir,
    ...(opts.insecure ? { insecure: true } : {}),
    enrolled_at: new Date().toISOString(),
  };
  await saveConfig(opts.configFile, config);
  return config;
}
