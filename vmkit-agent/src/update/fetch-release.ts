import { execFile } from '../child-process.ts';
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { promisify } from 'node:util';
import { pinKeys, verifyReleaseManifest } from '@vmkit/protocol';
import type { AgentUpdateParams, ErrorKey, SigningKey } from '@vmkit/protocol';

const run = promisify(execFile);

/** A refusal with its registered key; the executor turns it into a failed result. */
export class UpdateError extends Error {
  override readonly name = 'UpdateError';
  readonly key: ErrorKey;
  constructor(
    key: ErrorKey,
    message: string,
  ) {
    super(message);
    this.key = key;
  }
}

const MANIFEST_MAX_BYTES = 4096;
const TIMEOUT_MS = 30_000;
/** No byte for this long ends an artifact download. */
const STALL_MS = 60_000;

async function get(url: string, what: string): Promise<Response> {
  let res: Response;
  try {
    // Never follow a redirect: the agent downloads from its control plane only.
    res = await fetch(url, { redirect: 'error', signal: AbortSignal.timeout(TIMEOUT_MS) });
  } catch (err) {
    const cause = (err as { cause?: { message?: string } }).cause?.message;
    throw new UpdateError('update_download_failed', `cannot fetch the ${what} ${url}: ${cause ?? (err as Error).message}`);
  }
  if (!res.ok) {
    const text = (await res.text().catch(() => '')).slice(0, 300).replace(/\s+/g, ' ');
    throw new UpdateError('update_download_failed', `the control plane answered the ${what} ${url} with HTTP ${res.status}: ${text}`);
  }
  return res;
}

/** Fetches the release manifest and checks its signature under the pinned keys and that it is the release the command names. */
export async function verifiedManifest(url: string, params: AgentUpdateParams, pinned: SigningKey[]): Promise<void> {
  const res = await get(url, 'release manifest');
  const text = await res.text();
  if (Buffer.byteLength(text) > MANIFEST_MAX_BYTES) throw new UpdateError('update_verification_failed', `the release manifest is larger than ${MANIFEST_MAX_BYTES} bytes`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    throw new UpdateError('update_verification_failed', 'the release manifest is not JSON');
  }
  const verdict = verifyReleaseManifest(value, pinKeys(pinned));
  if (!verdict.ok) throw new UpdateError('update_verification_failed', `the release manifest is refused (${verdict.reason}): ${verdict.detail}`);
  const m = verdict.manifest;
  for (const k of ['version', 'platform', 'sha256', 'size'] as const) {
    if (m[k] !== params[k]) throw new UpdateError('update_verification_failed', `the signed manifest says ${k} ${m[k]}, the command ${params[k]}`);
  }
}

/**
 * Downloads the executable into `file` (created 0700, never overwritten), stopping as
 * soon as it runs past the announced size; checks size and sha-256 at the end.
 */
export async function downloadVerified(url: string, file: string, size: number, sha256: string): Promise<void> {
  const res = await get(url, 'release');
  const announced = res.headers.get('content-length');
  if (announced !== null && Number(announced) !== size) {
    await res.body?.cancel();
    throw new UpdateError('update_verification_failed', `the control plane announces ${announced} bytes, the signed manifest ${size}`);
  }
  if (!res.body) throw new UpdateError('update_download_failed', 'the release has no body');
  const out = await open(file, 'wx', 0o700);
  const hash = createHash('sha256');
  let got = 0;
  try {
    const reader = res.body.getReader();
    for (;;) {
      let stall: NodeJS.Timeout | undefined;
      const chunk = await Promise.race([
        reader.read(),
        new Promise<never>((_, reject) => {
          stall = setTimeout(() => reject(new UpdateError('update_download_failed', `the download stalled for ${STALL_MS / 1000} s at ${got} bytes`)), STALL_MS);
        }),
      ]).finally(() => clearTimeout(stall));
      if (chunk.done) break;
      // fetch bodies are byte streams; the DOM typings leave the chunk untyped.
      const bytes = chunk.value as Uint8Array;
      got += bytes.byteLength;
      if (got > size) {
        await reader.cancel();
        throw new UpdateError('update_verification_failed', `the download runs past the ${size} bytes the signed manifest names`);
      }
      hash.update(bytes);
      await out.write(bytes);
    }
    await out.sync();
  } catch (err) {
    if (err instanceof UpdateError) throw err;
    throw new UpdateError('update_download_failed', `the download of ${url} failed at ${got} bytes: ${(err as Error).message}`);
  } finally {
    await out.close();
  }
  if (got !== size) throw new UpdateError('update_verification_failed', `the download is ${got} bytes, the signed manifest names ${size}`);
  const digest = hash.digest('hex');
  if (digest !== sha256) throw new UpdateError('update_verification_failed', `the download's sha-256 is ${digest}, the signed manifest names ${sha256}`);
}

/** Runs the verified executable once: it must start on this machine and name the release. */
export async function checkRuns(file: string, version: string): Promise<void> {
  let stdout: string;
  try {
    ({ stdout } = await run(file, ['version'], { env: {}, timeout: 30_000 }));
  } catch (err) {
    throw new UpdateError('update_verification_failed', `the new executable does not run here: ${(err as Error).message.slice(0, 500)}`);
  }
  if (!stdout.startsWith(`vmkit-agent ${version} `)) throw new UpdateError('update_verification_failed', `the new executable says ${JSON.stringify(stdout.trim().slice(0, 200))}, not vmkit-agent ${version}`);
}
