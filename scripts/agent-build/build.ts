/**
 * The agent as one file per platform: esbuild bundles vmkit-agent and @vmkit/protocol
 * into one CommonJS script, Node makes it a single-executable-application blob (with a
 * V8 code cache, the systemd unit and node-pty's addon as assets), and postject injects
 * the blob into a copy of the target's Node binary. The output follows the layout the
 * control plane serves releases from:
 *
 *   <out>/<version>/<platform>/vmkit-agent      the executable (0755)
 *   <out>/<version>/<platform>/manifest.json    {version, platform, sha256, size, node, built_at}
 *   <out>/<version>/<platform>/.build/          the bundle and its source map (not served)
 *
 * Only the machine's own platform can be built: the blob and its code cache must come
 * from the target's Node, and pty.node must be compiled for the target.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, openSync, readFileSync, readSync, closeSync, renameSync, rmSync, statSync, writeFileSync, chmodSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { build } from 'esbuild';
import type { Plugin } from 'esbuild';
import { AGENT_PLATFORMS, agentVersionSchema, platformOf } from '@vmkit/protocol';
import type { AgentPlatform } from '@vmkit/protocol';

const run = promisify(execFile);

export const REPO_ROOT = resolve(import.meta.dirname, '..', '..');
const requireFromRoot = createRequire(join(REPO_ROOT, 'package.json'));
const AGENT_ENTRY = join(REPO_ROOT, 'vmkit-agent', 'src', 'cli.ts');
/** Node's SEA sentinel; the same for every Node release that supports SEAs. */
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';
/** ELF e_machine of each platform, to refuse an addon compiled for another CPU. */
const ELF_MACHINE: Record<AgentPlatform, number> = { 'linux-x64': 62, 'linux-arm64': 183 };
/** Faults a test build can carry (never set by a release build). */
export const BUILD_FAULTS = ['never-connect'] as const;
/**
 * V8 flags the executable always runs with (the SEA's execArgv; NODE_OPTIONS stays
 * ignored), each measured with `npm run bench -- agent` for an agent idling connected:
 * - `--max-semi-space-size=1`: a young generation capped at 1 MB per semi-space instead of
 *   V8's default (up to 16 MB), about 2 MiB less anonymous memory; an idle agent allocates
 *   little (heartbeats), commands and shell streams only scavenge more often.
 * - `--no-opt --no-maglev`: no optimising compilers (the interpreter and the Sparkplug
 *   baseline compiler stay). Their code is 2 MiB of the binary that no longer gets paged in,
 *   and their output 0.4 MiB of heap: 2.4 MiB less RSS. The agent's work is waiting on
 *   sockets, ed25519, hashing, JSON and child processes (native code); a signed command
 *   costs a few hundred microseconds either way, dominated by the signature.
 * - `--v8-pool-size=1`: one V8 platform worker thread instead of one per core: 0.4 MiB
 *   less (thread stacks and arenas); concurrent GC and compile tasks queue on it.
 * Not used: `--single-threaded-gc` saved nothing; an executable built with `--lite-mode`
 * failed to enroll here (enroll and update downloads use fetch, whose HTTP parser is
 * WebAssembly), and `--jitless` turns WebAssembly off.
 */
export const AGENT_EXEC_ARGV = ['--max-semi-space-size=1', '--no-opt', '--no-maglev', '--v8-pool-size=1'] as const;
export type BuildFault = (typeof BUILD_FAULTS)[number];

export class AgentBuildError extends Error {
  override readonly name = 'AgentBuildError';
}

export interface AgentBuildOptions {
  /** Default: this machine's platform. */
  platform?: string;
  /** Default: vmkit-agent/package.json's version. */
  version?: string;
  /** Releases folder to write into; default <repo>/dist/agent. */
  out?: string;
  /** Tests only: a release that misbehaves on purpose (e.g. never connects). */
  fault?: BuildFault;
  log?: (line: string) => void;
}

export interface AgentBuildManifest {
  version: string;
  platform: AgentPlatform;
  sha256: string;
  size: number;
  node: string;
  built_at: string;
  fault?: BuildFault;
}

export interface AgentBuildResult {
  file: string;
  manifestFile: string;
  manifest: AgentBuildManifest;
}

export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(join(REPO_ROOT, 'vmkit-agent', 'package.json'), 'utf8')) as { version: string };
  return pkg.version;
}

/** Why this machine cannot build `platform`, or undefined when it can. */
export function cannotBuild(platform: string): string | undefined {
  if (!(AGENT_PLATFORMS as readonly string[]).includes(platform)) return `unknown platform ${JSON.stringify(platform)} (known: ${AGENT_PLATFORMS.join(', ')})`;
  const host = platformOf(process.platform, process.arch);
  if (host !== platform) {
    return (
      `cannot build ${platform} on ${host ?? `${process.platform}-${process.arch}`}: the SEA blob and its V8 code cache must be made by the ` +
      `target's own Node, and node-pty's pty.node compiled for the target; build on a ${platform} machine (npm ci there installs its Node and compiles node-pty)`
    );
  }
  return undefined;
}

function elfMachine(file: string): number | undefined {
  const fd = openSync(file, 'r');
  try {
    const head = Buffer.alloc(20);
    if (readSync(fd, head, 0, 20, 0) < 20 || head.readUInt32BE(0) !== 0x7f454c46) return undefined;
    return head.readUInt16LE(18);
  } finally {
    closeSync(fd);
  }
}

/** The target's Node binary, as npm installed it (the node-linux-* package). */
function nodeBinary(platform: AgentPlatform): string {
  let file: string;
  try {
    file = requireFromRoot.resolve(`node-${platform}/bin/node`);
  } catch {
    throw new AgentBuildError(`no node-${platform} package in node_modules (npm installs it on ${platform} machines)`);
  }
  if (elfMachine(file) !== ELF_MACHINE[platform]) throw new AgentBuildError(`${file} is not a ${platform} executable`);
  return file;
}

/** node-pty's compiled addon for `platform`, checked to be one. */
export function ptyAddon(platform: AgentPlatform): string {
  const file = join(REPO_ROOT, 'node_modules', 'node-pty', 'build', 'Release', 'pty.node');
  if (!existsSync(file)) throw new AgentBuildError(`${file} is missing: node-pty was not compiled (npm rebuild node-pty)`);
  if (elfMachine(file) !== ELF_MACHINE[platform]) throw new AgentBuildError(`${file} is not compiled for ${platform}`);
  return file;
}

/** node-pty finds its addon relative to its own files; in the bundle it comes from the SEA (vmkit-agent/src/sea/pty-native.ts). */
const ptyLoaderPlugin: Plugin = {
  name: 'vmkit-pty-native',
  setup(b) {
    b.onResolve({ filter: /^\.\/utils$/ }, (args) =>
      /[\\/]node-pty[\\/]lib$/.test(args.resolveDir) ? { path: join(REPO_ROOT, 'vmkit-agent', 'src', 'sea', 'pty-native.ts') } : undefined,
    );
  },
};

/**
 * zod's `z.locales` namespace pulls every translation of its error messages into the bundle
 * (about 50 files, 350 KB of source the agent would carry in its heap); nothing here switches
 * locale, and zod itself configures English, so the bundle gets the English one only.
 */
const zodEnglishOnlyPlugin: Plugin = {
  name: 'vmkit-zod-english-only',
  setup(b) {
    b.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
      /[\\/]zod[\\/]v4[\\/](classic|core)$/.test(args.resolveDir) ? { path: join(args.resolveDir, '..', 'locales', 'index.js'), namespace: 'zod-locales' } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'zod-locales' }, (args) => ({
      contents: "export { default as en } from './en.js';\n",
      resolveDir: join(args.path, '..'),
      loader: 'js',
    }));
  },
};

/**
 * The agent as one CommonJS file, what the executable carries, with node-pty's addon copied
 * beside it (a bundle run by plain node loads it from there: vmkit-agent/src/sea/pty-native.ts).
 * The tests run their agent processes from such a bundle (test/build-first.ts).
 */
export async function bundleAgent(
  outfile: string,
  opts: {
    version: string;
    pty: string;
    fault?: BuildFault | undefined;
    /**
     * A bundle run from the repository (the tests'): `import.meta.url` is then
     * vmkit-agent/src/cli.ts's URL in every file, so what the agent reads from beside its
     * sources when it is not an executable (the systemd unit) is found, as under tsx.
     */
    fromSources?: boolean;
  },
): Promise<void> {
  const result = await build({
    entryPoints: [AGENT_ENTRY],
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node24',
    outfile,
    sourcemap: 'external',
    legalComments: 'none',
    // V8 keeps the whole script's source in the heap (lazily compiled functions are compiled
    // from it): without whitespace and comments it is about half the size, and comments were
    // what carried non-ASCII characters, which make V8 store every character in two bytes.
    // Stack traces still map to the sources through the source map written beside the bundle.
    minifyWhitespace: true,
    charset: 'ascii',
    define: {
      VMKIT_AGENT_BUILD_VERSION: JSON.stringify(opts.version),
      VMKIT_AGENT_BUILD_FAULT: JSON.stringify(opts.fault ?? ''),
      ...(opts.fromSources && { 'import.meta.url': JSON.stringify(pathToFileURL(AGENT_ENTRY).href) }),
    },
    plugins: [ptyLoaderPlugin, zodEnglishOnlyPlugin],
    // version.ts reads package.json through import.meta.url only when the define above is absent (tsx).
    logOverride: { 'empty-import-meta': 'silent' },
    logLevel: 'silent',
  });
  if (result.warnings.length > 0) throw new AgentBuildError(`esbuild warned: ${result.warnings.map((w) => w.text).join('; ')}`);
  // One non-ASCII character anywhere doubles the source V8 keeps in the agent's heap.
  const nonAscii = /[\u0080-\u00ff]/.exec(readFileSync(outfile, 'latin1'));
  if (nonAscii) throw new AgentBuildError(`the bundle has a non-ASCII character at offset ${nonAscii.index} (V8 would keep the whole source as two-byte)`);
  // The bundle run by plain node finds the addon beside it (pty-native.ts).
  copyFileSync(opts.pty, join(dirname(outfile), 'pty.node'));
}

function sha256File(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

async function hasStrip(): Promise<boolean> {
  try {
    await run('strip', ['--version']);
    return true;
  } catch {
    return false;
  }
}

export async function buildAgent(opts: AgentBuildOptions = {}): Promise<AgentBuildResult> {
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const platform = opts.platform ?? platformOf(process.platform, process.arch) ?? `${process.platform}-${process.arch}`;
  const why = cannotBuild(platform);
  if (why !== undefined) throw new AgentBuildError(why);
  const target = platform as AgentPlatform;
  const version = opts.version ?? packageVersion();
  if (!agentVersionSchema.safeParse(version).success) throw new AgentBuildError(`version ${JSON.stringify(version)} is not a release version like 1.2.3 or 1.2.3-rc.1`);
  const node = nodeBinary(target);
  const pty = ptyAddon(target);
  const out = resolve(opts.out ?? join(REPO_ROOT, 'dist', 'agent'));
  const finalDir = join(out, version, target);
  const stage = join(out, version, `.${target}.${process.pid}.${Date.now()}.tmp`);
  const work = join(stage, '.build');
  mkdirSync(work, { recursive: true });
  log(`vmkit-agent ${version} for ${target}${opts.fault ? ` (test fault: ${opts.fault})` : ''}`);
  try {
    const bundle = join(work, 'agent.cjs');
    await bundleAgent(bundle, { version, pty, ...(opts.fault ? { fault: opts.fault } : {}) });
    const unit = join(REPO_ROOT, 'scripts', 'vmkit-agent.service');
    const seaConfig = join(work, 'sea-config.json');
    const blob = join(work, 'sea.blob');
    writeFileSync(
      seaConfig,
      JSON.stringify({
        main: bundle,
        output: blob,
        disableExperimentalSEAWarning: true,
        useCodeCache: true,
        // NODE_OPTIONS from the VM's environment must not reach a root daemon.
        execArgvExtension: 'none',
        execArgv: AGENT_EXEC_ARGV,
        assets: { 'pty.node': pty, 'vmkit-agent.service': unit },
      }),
    );
    // The code cache is made under the same V8 flags: V8 rejects a cache made under other flags.
    await run(node, [...AGENT_EXEC_ARGV, '--experimental-sea-config', seaConfig], { cwd: work });
    const exe = join(stage, 'vmkit-agent');
    copyFileSync(node, exe);
    chmodSync(exe, 0o755);
    // Symbols and debug info are a sixth of the binary and nothing on a VM reads them.
    if (await hasStrip()) await run('strip', ['--strip-all', exe]);
    else log('strip not found: the executable keeps its symbols (about 18 MB more)');
    await run(process.execPath, [requireFromRoot.resolve('postject/dist/cli.js'), exe, 'NODE_SEA_BLOB', blob, '--sentinel-fuse', SEA_FUSE], {
      maxBuffer: 16 * 1024 * 1024,
    });
    const { stdout, stderr } = await run(exe, ['version'], { env: {} });
    if (!stdout.startsWith(`vmkit-agent ${version} `)) throw new AgentBuildError(`the built executable says ${JSON.stringify(stdout.trim())}`);
    // e.g. "Warning: Code cache data rejected": every start would then compile the bundle from source.
    if (stderr.trim() !== '') throw new AgentBuildError(`the built executable warns: ${stderr.trim()}`);
    const manifest: AgentBuildManifest = {
      version,
      platform: target,
      sha256: sha256File(exe),
      size: statSync(exe).size,
      node: (await run(node, ['--version'])).stdout.trim(),
      built_at: new Date().toISOString(),
      ...(opts.fault ? { fault: opts.fault } : {}),
    };
    const manifestFile = join(stage, 'manifest.json');
    writeFileSync(manifestFile, `${JSON.stringify(manifest, null, 2)}\n`);
    rmSync(finalDir, { recursive: true, force: true });
    renameSync(stage, finalDir);
    log(`  ${join(finalDir, 'vmkit-agent')} (${(manifest.size / 1e6).toFixed(1)} MB, sha256 ${manifest.sha256})`);
    return { file: join(finalDir, 'vmkit-agent'), manifestFile: join(finalDir, 'manifest.json'), manifest };
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}
