import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { compareAgentVersions, releaseArtifactPath, releaseManifestPath } from '@vmkit/protocol';
import type { AgentPlatform, AgentUpdateParams, ErrorKey } from '@vmkit/protocol';
import { fsyncDir } from '../durable.ts';
import type { DeferredOutcome, ExecutorContext, ExecutorOutcome, ExecutorSpec } from '../executors/types.ts';
import { UpdateError, checkRuns, downloadVerified, verifiedManifest } from './fetch-release.ts';
import { EXECUTABLE, installLayoutOf, switchCurrent, versionExecutable } from './layout.ts';
import type { InstallLayout } from './layout.ts';
import { readMarker, writeMarker } from './marker.ts';

export interface UpdateEnv {
  /** `<state>/update.json`. */
  markerFile: string;
  /**
   * The control planes this agent enrolled with or dials (base URLs): the only places it
   * downloads from. Any process of the fleet may send the update, naming its own URL.
   */
  controlPlaneUrls: string[];
  /** The new version must connect within this, or it is rolled back. */
  confirmWithinMs: number;
  /** The running version and executable. */
  version: string;
  execPath: string;
  platform: AgentPlatform | undefined;
  /** Checks that a staged executable runs (tests of the executor stand in for it). */
  checkRuns?: (file: string, version: string) => Promise<void>;
}

const refuse = (key: ErrorKey, message: string): ExecutorOutcome => ({ status: 'failed', error: { key, message } });

/** The release's URLs under the control plane's base URL (which may have a path). */
export function releaseUrls(controlPlaneUrl: string, version: string, platform: string): { artifact: string; manifest: string } {
  const base = new URL(controlPlaneUrl.endsWith('/') ? controlPlaneUrl : `${controlPlaneUrl}/`);
  return { artifact: new URL(releaseArtifactPath(version, platform), base).href, manifest: new URL(releaseManifestPath(version, platform), base).href };
}

function sha256Of(file: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash('sha256');
    createReadStream(file)
      .on('data', (c) => h.update(c))
      .on('error', reject)
      .on('end', () => resolve(h.digest('hex')));
  });
}

/** What must hold before anything is downloaded; a refusal names why. */
async function preflight(params: AgentUpdateParams, env: UpdateEnv): Promise<{ layout: InstallLayout; urls: { artifact: string; manifest: string } } | ExecutorOutcome> {
  if (params.platform !== env.platform) return refuse('update_refused', `this agent runs on ${env.platform ?? 'an unsupported platform'}, the release is for ${params.platform}`);
  const order = compareAgentVersions(params.version, env.version);
  if (order < 0 && params.allow_downgrade !== true) {
    return refuse('update_refused', `${params.version} is older than the running ${env.version}; a downgrade needs allow_downgrade: true`);
  }
  const candidates = env.controlPlaneUrls.map((base) => releaseUrls(base, params.version, params.platform));
  const urls = candidates.find((u) => u.artifact === params.url);
  if (!urls) {
    const allowed = candidates.map((u) => u.artifact).join(' or ');
    return refuse('update_refused', `the release URL must be ${allowed}: this agent downloads only from its own control planes`);
  }
  const found = await installLayoutOf(env.execPath, env.version);
  if (!found.ok) return refuse('update_refused', `this agent cannot update itself: ${found.reason}`);
  const pending = await readMarker(env.markerFile);
  if (pending) return refuse('update_refused', `an update to ${pending.to_version} (command ${pending.command_id}) is still in progress`);
  return { layout: found.layout, urls };
}

/**
 * Puts the verified executable at versions/<version>: a folder already holding exactly
 * this release is kept; anything else there is replaced.
 */
async function place(layout: InstallLayout, params: AgentUpdateParams, staged: string, stageDir: string): Promise<void> {
  const dest = join(layout.versionsDir, params.version);
  const existing = versionExecutable(layout, params.version);
  if ((await stat(existing).catch(() => undefined))?.isFile() && (await sha256Of(existing)) === params.sha256) {
    await rm(stageDir, { recursive: true, force: true });
    return;
  }
  await chmod(staged, 0o755);
  await chmod(stageDir, 0o755);
  await rm(dest, { recursive: true, force: true });
  await rename(stageDir, dest);
  await fsyncDir(layout.versionsDir);
}

async function update(params: AgentUpdateParams, ctx: ExecutorContext<'agent.update'>, env: UpdateEnv): Promise<ExecutorOutcome | DeferredOutcome> {
  ctx.progress('check', 'started');
  const pre = await preflight(params, env);
  if ('status' in pre) {
    ctx.progress('check', 'failed', pre.status === 'failed' ? pre.error.message : undefined);
    return pre;
  }
  ctx.progress('check', 'done');
  if (params.version === env.version) return { status: 'succeeded', output: { version: env.version, previous_version: env.version, changed: false } };
  const { layout, urls } = pre;
  const stageDir = join(layout.versionsDir, `.${params.version}.${process.pid}.${Date.now()}`);
  try {
    ctx.progress('manifest', 'started');
    await verifiedManifest(urls.manifest, params, ctx.keys.list());
    ctx.progress('manifest', 'done', 'signature verified under a pinned key');
    ctx.progress('download', 'started', `${params.size} bytes`);
    await mkdir(stageDir, { mode: 0o700 });
    const staged = join(stageDir, EXECUTABLE);
    await downloadVerified(urls.artifact, staged, params.size, params.sha256);
    ctx.progress('download', 'done', 'size and sha-256 verified');
    ctx.progress('stage', 'started');
    await (env.checkRuns ?? checkRuns)(staged, params.version);
    await place(layout, params, staged, stageDir);
    ctx.progress('stage', 'done', versionExecutable(layout, params.version));
  } catch (err) {
    await rm(stageDir, { recursive: true, force: true });
    if (err instanceof UpdateError) {
      ctx.log.warn('update refused', { version: params.version, key: err.key, reason: err.message });
      return refuse(err.key, err.message);
    }
    throw err;
  }
  // The marker goes first: a crash right after the switch still finds it at the next start.
  const now = Date.now();
  await writeMarker(env.markerFile, {
    version: 1,
    command_id: ctx.command.id,
    from_version: env.version,
    to_version: params.version,
    root: layout.root,
    switched_at: now,
    confirm_by: now + env.confirmWithinMs,
    starts: 0,
    state: 'pending',
  });
  ctx.progress('switch', 'started');
  await switchCurrent(layout, params.version);
  ctx.progress('switch', 'done', `current -> versions/${params.version}; restarting`);
  ctx.log.info('update staged and switched; restarting on the new version', { from: env.version, to: params.version, confirm_within_ms: env.confirmWithinMs });
  return { status: 'deferred' };
}

/**
 * `agent.update`: verify, stage, switch `current`, write the pending-update marker and
 * defer the result to the next process (the daemon exits and systemd, or the restart
 * loop, starts the new version). See update/start.ts for what happens then.
 */
export function agentUpdateExecutor(env: UpdateEnv): ExecutorSpec<'agent.update'> {
  return { exclusive: true, run: (params, ctx) => update(params, ctx, env) };
}
